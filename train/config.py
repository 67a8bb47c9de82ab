"""Every training knob in one dataclass, read from a YAML file and overridden from the command line.

Like nanoGPT's config, the whole run is visible in one place: `TrainConfig` lists each key with its
default and a one-line help, the YAML files in `train/configs/` set the defaults of one head, and
`--key value` on the command line wins over both. Importing this module loads no torch, so
`train.py --help` answers at once.
"""

from __future__ import annotations

import math
import sys
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from common.errors import UserError
from common.fileio import read_yaml
from common.names import check_name
from common.runtime import PRECISION_HELP, check_precision

if TYPE_CHECKING:
    from common.settings import Settings

TRAIN_ALL = "all"  # train_blocks: the whole backbone (models.backbones.TRAIN_ALL, not imported: it loads torch)
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "linear.yaml"
# window 0 means this many patches a side: 392 px on /14 backbones, 448 on /16. A 1920-px quadrat is then
# 5 x 5 windows: under 5 s with ViT-S on a 2-core CPU, at the mIoU of denser windows (benchmarks/README.md).
DEFAULT_WINDOW_PATCHES = 28


@dataclass
class TrainConfig:
    """A training run, as run: written to `runs/<name>/config.yaml`."""

    head: str = field(
        default="linear", metadata={"help": "segmentation head: linear, segformer, upernet, mask2former, pmt"}
    )
    head_config: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "extra keyword arguments of the head, e.g. '{dropout: 0.1}'"}
    )
    backbone: str = field(default="dinov2_vits14", metadata={"help": "backbone name (models.backbones.BACKBONES)"})
    weights: str = field(
        default="", metadata={"help": "DINO weights file or folder; empty: DINO_WEIGHTS from settings, else random"}
    )
    layers: int | list[int] | None = field(
        default=None,
        metadata={
            "help": "backbone blocks to read: indices, or a count of evenly spaced ones; empty: last for linear, 4 for the others"
        },
    )
    data_dir: str = field(
        default="",
        metadata={"help": "prepared folder; empty: the demo dataset prepared with LABEL_TAXONOMY under DATA_ROOT"},
    )
    dataset: str = field(
        default="", metadata={"help": "dataset name used for the default data_dir; empty: DEMO_DATASET"}
    )
    taxonomy: str = field(
        default="", metadata={"help": "taxonomy used for the default data_dir; empty: LABEL_TAXONOMY"}
    )
    runs_dir: str = field(default="", metadata={"help": "where run folders go; empty: RUNS_DIR"})
    name: str = field(
        default="", metadata={"help": "run folder name under runs_dir; empty: <head>_<prepared folder name>"}
    )
    resume: bool = field(default=False, metadata={"help": "continue the run in runs_dir/name exactly where it stopped"})
    init_from: str = field(
        default="",
        metadata={
            "help": "warm start the head from another run folder (its classifier is kept only if the classes match)"
        },
    )
    train_blocks: int | str = field(
        default=0,
        metadata={
            "help": "fine-tune the last N backbone blocks with the head (the cache then holds the frozen part); 0: frozen backbone; all: the whole backbone, no cache"
        },
    )
    backbone_lr_mult: float = field(
        default=0.1, metadata={"help": "learning rate of the trained backbone blocks as a multiple of lr"}
    )
    lora_rank: int = field(
        default=0,
        metadata={
            "help": "LoRA rank on the trained blocks' attention qkv and proj layers (only the adapters train); 0: off"
        },
    )
    crop: int = field(default=448, metadata={"help": "training crop in pixels (a multiple of the patch size)"})
    views_per_image: int = field(
        default=8, metadata={"help": "K: fixed random views per training image (scale, crop, flip, 90-degree rotation)"}
    )
    scale_range: list[float] = field(
        default_factory=lambda: [0.5, 1.0], metadata={"help": "[min, max] resize factor of the image before cropping"}
    )
    fresh_views: bool = field(
        default=False, metadata={"help": "with --no-cache: draw new random views every epoch instead of the fixed bank"}
    )
    cache: bool = field(
        default=True, metadata={"help": "train on cached frozen-backbone features (--no-cache: run the backbone live)"}
    )
    cache_dir: str = field(default="", metadata={"help": "feature cache folder; empty: DATA_ROOT/cache"})
    extract_batch_size: int = field(
        default=8, metadata={"help": "views per backbone forward pass when filling the cache"}
    )
    batch_size: int = field(default=8, metadata={"help": "training views per step (over all processes)"})
    steps: int = field(default=500, metadata={"help": "optimizer steps in the whole run"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=50, metadata={"help": "linear warm-up steps from 0 to lr"})
    schedule: str = field(default="poly", metadata={"help": "decay after warm-up: poly or cosine"})
    poly_power: float = field(default=0.9, metadata={"help": "exponent of the poly decay"})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "final lr as a fraction of lr"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the gradient norm to this (0: off)"})
    class_weights: bool = field(
        default=False, metadata={"help": "weight the loss by inverse square-root class frequency of the training masks"}
    )
    precision: str = field(default="auto", metadata={"help": PRECISION_HELP})
    eval_every: int = field(
        default=100, metadata={"help": "validate on the full val images every N steps (and at the end)"}
    )
    window: int = field(
        default=0,
        metadata={
            "help": f"sliding-window size of validation and evaluation in pixels, a multiple of the patch size; 0: {DEFAULT_WINDOW_PATCHES} patches (392 px on /14 backbones, 448 on /16)"
        },
    )
    window_stride: int = field(
        default=0,
        metadata={
            "help": "largest step between sliding windows of validation and evaluation; 0: the window (the fewest windows that cover the image, spread evenly)"
        },
    )
    val_batch_size: int = field(default=4, metadata={"help": "windows per forward pass in validation"})
    max_val_images: int = field(default=0, metadata={"help": "validate on the first N val images only (0: all)"})
    patience: int = field(
        default=5, metadata={"help": "stop after this many validations without a better mIoU (0: never)"}
    )
    log_every: int = field(default=20, metadata={"help": "log the training loss and lr every N steps"})
    device: str = field(default="", metadata={"help": "cpu, cuda, cuda:1 ...; empty: DEVICE from settings"})
    workers: int = field(default=-1, metadata={"help": "data-loading worker processes; -1: WORKERS from settings"})
    seed: int = field(
        default=-1, metadata={"help": "random seed of views, sampling and initialisation; -1: SEED from settings"}
    )


KEYS = {f.name: f for f in fields(TrainConfig)}
RENAMED_KEYS = {"val_stride": "window_stride"}  # old name -> new name; old runs' config.yaml still load


_NON_FINITE = {"nan", "inf", "infinity"}  # in any case, with a sign or YAML's leading dot: read as floats, then refused


def _parse(text: str) -> Any:
    """A value typed on the command line or in YAML as text: a number, a list, a mapping, or the text."""
    if text.strip().lower().lstrip("+-").lstrip(".") in _NON_FINITE:
        return float(text.strip().replace(".", ""))
    try:
        return (
            float(text)
            if any(c in text.lower() for c in ".e") and text.lower() not in ("true", "false", "yes", "no")
            else int(text)
        )
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _default(f: Field[Any]) -> Any:
    """A field's default value, from `default` or `default_factory`."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise TypeError(f"config key {f.name} has no default")


def coerce_value(name: str, value: Any) -> Any:
    """`value` coerced to the field's type, or a UserError naming the key and what it expects."""
    f = KEYS[name]
    default = _default(f)
    kind = str(f.type)
    if isinstance(value, str) and not isinstance(default, str):
        value = _parse(value)
    if name == "train_blocks" and isinstance(value, str):
        if value == TRAIN_ALL:
            return value
        raise UserError(f"train_blocks is a number of last backbone blocks to train, or 'all', not {value!r}")
    if value is None and "None" in kind:
        return None
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int) or kind.startswith("int"):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and not kind.startswith("int |"):
            return int(value)
        if "list" in kind and isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
            return list(value)
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        if value is not None and not isinstance(value, (dict, list)):
            return str(value)
    elif isinstance(default, dict):
        if isinstance(value, dict):
            return value
    elif isinstance(default, list) or "list" in kind:
        if isinstance(value, (list, tuple)):
            return list(value)
    raise UserError(f"config key {name!r} expects {kind}, got {value!r}")


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """The YAML file's keys (default `configs/linear.yaml`) over the defaults, then `overrides`."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file() and (CONFIG_DIR / path).is_file():
        path = CONFIG_DIR / path
    if not path.is_file():
        raise UserError(
            f"config file {path} not found; choose one of {', '.join(sorted(p.name for p in CONFIG_DIR.glob('*.yaml')))}"
        )
    values = read_yaml(path, "config file") or {}
    if not isinstance(values, dict):
        raise UserError(f"config file {path} must hold a mapping of keys to values")
    overrides = {k.replace("-", "_"): v for k, v in overrides.items()}
    for old in sorted(set(overrides) & set(RENAMED_KEYS)):
        print(
            f"note: --{old.replace('_', '-')} is deprecated; use --{RENAMED_KEYS[old].replace('_', '-')}",
            file=sys.stderr,
        )
    values = {RENAMED_KEYS.get(k, k): v for k, v in {**values, **overrides}.items()}
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise UserError(f"unknown config key(s) {', '.join(unknown)}; run train/train.py --help for the list")
    config = TrainConfig(**{k: coerce_value(k, v) for k, v in values.items()})
    check_config(config)
    return config


# (key, smallest allowed, whether the smallest itself is allowed): refused before any work, with the key to fix
_RANGES = (
    ("lr", 0.0, False), ("weight_decay", 0.0, True), ("warmup_steps", 0, True), ("poly_power", 0.0, False),
    ("min_lr_ratio", 0.0, True), ("grad_clip", 0.0, True), ("patience", 0, True), ("max_val_images", 0, True),
    ("workers", -1, True), ("seed", -1, True),
)  # fmt: skip


def check_config(config: TrainConfig) -> None:
    """Values that would only fail later, in the middle of a run, refused now with the key to fix."""
    for f in fields(TrainConfig):
        value = getattr(config, f.name)
        numbers = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise UserError(
                f"{f.name} must be a finite number, got {value}; set it in the config file or with --{f.name}"
            )
    for key, low, inclusive in _RANGES:
        value = getattr(config, key)
        if value < low or (value == low and not inclusive):
            raise UserError(f"{key} must be {'at least' if inclusive else 'more than'} {low}, got {value}")
    if config.min_lr_ratio > 1:
        raise UserError(f"min_lr_ratio is a fraction of lr, from 0 to 1, got {config.min_lr_ratio}")
    if config.schedule not in ("poly", "cosine"):
        raise UserError(f"schedule must be poly or cosine, got {config.schedule!r}")
    check_precision(config.precision)
    if len(config.scale_range) != 2 or not 0 < config.scale_range[0] <= config.scale_range[1]:
        raise UserError(f"scale_range must be [min, max] with 0 < min <= max, got {config.scale_range}")
    if config.window < 0 or config.window_stride < 0:
        raise UserError(
            f"window and window_stride must be positive (or 0 for the default), got {config.window} and {config.window_stride}"
        )
    for key in (
        "crop",
        "views_per_image",
        "batch_size",
        "steps",
        "eval_every",
        "extract_batch_size",
        "val_batch_size",
        "log_every",
    ):
        if getattr(config, key) < 1:
            raise UserError(f"{key} must be at least 1, got {getattr(config, key)}")
    for key, names in (
        ("name", "the run folder under runs_dir"),
        ("dataset", "a FiftyOne dataset"),
        ("taxonomy", "a taxonomy"),
    ):
        if getattr(config, key):
            check_name(
                getattr(config, key),
                f"--{key}",
                f"it names {names}; pass a plain name (a folder goes in --runs_dir or --data_dir)",
            )
    check_fine_tuning(config)
    if config.resume and config.init_from:
        raise UserError("--resume continues a run and --init-from starts a new one; pass only one of them")


def check_fine_tuning(config: TrainConfig) -> None:
    """train_blocks within the backbone's depth (or all), a positive lr multiplier, LoRA only on trained blocks."""
    if config.backbone_lr_mult <= 0:
        raise UserError(
            f"backbone_lr_mult must be more than 0, got {config.backbone_lr_mult}; use train_blocks 0 to freeze the backbone"
        )
    if config.lora_rank < 0:
        raise UserError(f"lora_rank must be 0 (off) or a positive rank, got {config.lora_rank}")
    blocks = config.train_blocks
    if blocks == TRAIN_ALL:
        if config.lora_rank:
            raise UserError(
                "LoRA adapts blocks, not the patch embedding: with lora_rank set train_blocks to the backbone's block count, not all"
            )
        return
    if not isinstance(blocks, int) or blocks < 0:
        raise UserError(f"train_blocks must be a block count from 0 or 'all', got {blocks!r}")
    if config.lora_rank and not blocks:
        raise UserError(f"lora_rank {config.lora_rank} puts LoRA adapters on the trained blocks; set train_blocks too")
    if blocks:
        from models.backbones import get_spec

        depth = get_spec(config.backbone).depth
        if blocks > depth:
            raise UserError(
                f"train_blocks {blocks} is more than the {depth} blocks of {config.backbone}; use at most {depth} or 'all'"
            )


def with_default_window(config: TrainConfig) -> TrainConfig:
    """The sliding window of validation (and of the checkpoint, so of `evaluate`) made concrete: `window: 0` is
    DEFAULT_WINDOW_PATCHES patches of the config's backbone, `window_stride: 0` the window itself."""
    from models.backbones import get_spec
    from models.sliding_window import default_window_stride

    window = config.window or DEFAULT_WINDOW_PATCHES * get_spec(config.backbone).patch_size
    return replace(config, window=window, window_stride=default_window_stride(window, config.window_stride))


def resolve_config(config: TrainConfig, settings: Settings) -> TrainConfig:
    """`config` complete: every empty or -1 key that means "from the settings" (or "from the backbone") filled in.

    The command line calls this once; below it (`train.loop`) nothing reads settings and no key is a placeholder.
    The resolved config is what runs and what `config.yaml` records.
    """
    from prepare.layout import default_output_dir

    def path(value: str, default: Path) -> str:
        return str(Path(value).expanduser() if value else default)

    dataset, taxonomy = config.dataset or settings.demo_dataset, config.taxonomy or settings.label_taxonomy
    data_dir = Path(path(config.data_dir, default_output_dir(settings.data_root, dataset, taxonomy)))
    return with_default_window(
        replace(
            config,
            data_dir=str(data_dir),
            runs_dir=path(config.runs_dir, settings.runs_dir),
            name=config.name or f"{config.head}_{data_dir.name}",
            cache_dir=path(config.cache_dir, settings.data_root / "cache"),
            weights=config.weights or settings.dino_weights,
            device=config.device or settings.device,
            workers=config.workers if config.workers >= 0 else settings.workers,
            seed=config.seed if config.seed >= 0 else settings.seed,
        )
    )


def check_resolved(config: TrainConfig) -> None:
    """A config with a placeholder left is a programming error: `resolve_config` was not called."""
    left = [key for key in ("data_dir", "runs_dir", "name", "cache_dir", "device") if not getattr(config, key)]
    left += [key for key in ("workers", "seed") if getattr(config, key) < 0]
    left += [key for key in ("window", "window_stride") if not getattr(config, key)]
    if left:
        raise ValueError(f"train config not resolved (pass it through train.config.resolve_config): {', '.join(left)}")


def config_dict(config: TrainConfig) -> dict[str, Any]:
    """The config as plain data, in field order (for config.yaml and the checkpoint spec)."""
    return asdict(config)


def help_text() -> str:
    """Usage and every key with its default and help, generated from `TrainConfig`."""
    lines = [
        "usage: python train/train.py [--config train/configs/<head>.yaml] [--key value ...]",
        "       torchrun --nproc-per-node=N train/train.py ...   (several GPUs, DistributedDataParallel)",
        "",
        "Train a segmentation head on a frozen DINO backbone over a prepared folder.",
        f"Configs: {', '.join(sorted(p.name for p in CONFIG_DIR.glob('*.yaml')))} (in train/configs/).",
        "Booleans: --key, --no-key or --key false (e.g. --resume, --no-cache).",
        "",
        "keys (default):",
    ]
    for f in fields(TrainConfig):
        default = _default(f)
        lines.append(f"  --{f.name.replace('_', '-')} ({default!r})\n      {f.metadata['help']}")
    return "\n".join(lines)
