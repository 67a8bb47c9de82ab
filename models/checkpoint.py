"""The checkpoint contract: the head's weights as safetensors, plus a JSON spec of everything else.

The frozen backbone is rebuilt by name from its own weights file, so a checkpoint stays a few
megabytes; backbone blocks that were fine-tuned (`train_blocks`) are stored with the head under
`backbone.` and loaded over it. The spec says which backbone (and the hash of its weights), which
layers, which blocks trained, which head with which options, the classes and how images were
normalised and tiled. Loading never unpickles anything. See docs/checkpoint.md.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from common.errors import UserError
from common.fileio import sha256_file, write_bytes_atomic, write_json_atomic
from models.backbones import CHECKPOINT_PREFIX, TRAIN_ALL, Backbone, RandomBackboneWarning, build_backbone
from models.heads import SegHead, build_head
from models.segmenter import Segmenter

FORMAT = "reefseg-checkpoint"
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
# Version 3 added `train_blocks` (fine-tuned backbone blocks stored beside the head); older specs are frozen (0).
# Version 1 named the sliding window `crop`/`stride` (train's `crop` is the training crop, so version 2 renamed them).
VERSION_1_NAMES = {"crop": "window", "stride": "window_stride"}
CHECKPOINT_NAMES = ("best", "last")
# Training choices, not needed to rebuild the head; left out of the spec, and dropped from older specs that
# hold them (mask2former's `num_points` was renamed `loss_points`, the option every head shares).
LOSS_ONLY_OPTIONS = ("class_weights", "loss_points", "loss_scale", "oversample_ratio", "importance_ratio", "num_points")


@dataclass
class CheckpointSpec:
    """Everything but the head's weights that inference needs, as plain JSON-able data."""

    backbone: str
    weights_hash: str
    layers: list[int]
    head: str
    head_config: dict[str, Any]
    num_classes: int
    classes: list[str]
    palette: list[list[int]]
    taxonomy: str
    mean: list[float]
    std: list[float]
    window: int
    window_stride: int
    train_blocks: int | str = (
        0  # backbone blocks trained with the head (the last N, or "all"); their weights are in the tensors
    )
    info: dict[str, Any] = field(default_factory=dict)  # for people (step, val mIoU, config); never read back

    def __post_init__(self) -> None:
        if len(self.classes) != self.num_classes:
            raise ValueError(f"spec lists {len(self.classes)} classes for num_classes={self.num_classes}")
        if self.palette and len(self.palette) != self.num_classes:
            raise ValueError(f"spec has {len(self.palette)} palette colours for {self.num_classes} classes")

    @classmethod
    def of(
        cls,
        backbone: Backbone,
        head: SegHead,
        classes: Sequence[str],
        palette: Sequence[Sequence[int]],
        taxonomy: str,
        window: int,
        window_stride: int,
        info: dict[str, Any] | None = None,
    ) -> CheckpointSpec:
        """The spec of a model made by `build_backbone` + `build_head`, with the data's classes and tiling."""
        return cls(
            backbone=backbone.name,
            weights_hash=backbone.weights_hash,
            layers=[int(i) for i in backbone.layers],
            head=head.name,
            head_config={k: v for k, v in head.config.items() if k not in LOSS_ONLY_OPTIONS},
            num_classes=head.num_classes,
            classes=list(classes),
            palette=[[int(c) for c in colour] for colour in palette],
            taxonomy=taxonomy,
            mean=[float(m) for m in backbone.mean],
            std=[float(s) for s in backbone.std],
            window=int(window),
            window_stride=int(window_stride),
            train_blocks=backbone.train_blocks,
            info=dict(info or {}),
        )


@dataclass
class WarmStart:
    """What `init_head_from` took from the other run, and what it left at its fresh initialisation."""

    kept: list[str]
    skipped: list[str]


def checkpoint_stem(run_dir: str | Path, which: str = "best") -> Path:
    """`runs/<name>/checkpoint_<which>`; the files are that plus `.safetensors` and `.json`."""
    if which not in CHECKPOINT_NAMES:
        raise UserError(f"which checkpoint: choose one of {', '.join(CHECKPOINT_NAMES)}, not {which!r}")
    return Path(run_dir) / f"checkpoint_{which}"


def save_checkpoint(
    path_stem: str | Path, head: SegHead, spec: CheckpointSpec, backbone: Backbone | None = None
) -> None:
    """Write `<stem>.safetensors` (head weights, and the backbone's trained blocks under `backbone.`) then
    `<stem>.json` (spec + the tensors' hash), each atomically.

    The JSON is written last and names the hash of the tensors it goes with, so a save interrupted
    between the two files is detected on load instead of pairing old weights with a new spec.
    """
    stem = Path(path_stem)
    if spec.train_blocks and (backbone is None or backbone.train_blocks != spec.train_blocks):
        raise ValueError(
            f"a spec with train_blocks {spec.train_blocks} is saved with the backbone whose blocks trained"
        )
    trained = backbone.trained_weights() if backbone is not None and spec.train_blocks else {}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in head.state_dict().items()}
    tensors |= {CHECKPOINT_PREFIX + k: v.to("cpu").contiguous() for k, v in trained.items()}
    data = safetensors_bytes(
        tensors, metadata={"format": FORMAT}
    )  # in memory, so a full disk is common.fileio's one sentence
    write_bytes_atomic(stem.with_suffix(".safetensors"), data)
    digest = hashlib.sha256(data).hexdigest()
    write_json_atomic(
        stem.with_suffix(".json"), {"format": FORMAT, "version": VERSION, "tensors_sha256": digest, **asdict(spec)}
    )


def save_run_checkpoint(
    run_dir: str | Path, head: SegHead, spec: CheckpointSpec, which: str = "best", backbone: Backbone | None = None
) -> Path:
    """Save the run's `best` or `last` checkpoint; returns its stem."""
    stem = checkpoint_stem(run_dir, which)
    save_checkpoint(stem, head, spec, backbone)
    return stem


def _resolve_stem(path: str | Path, which: str) -> Path:
    """A run folder, or one checkpoint's .json/.safetensors file, to the checkpoint's stem."""
    path = Path(path)
    if path.suffix in (".json", ".safetensors"):
        return path.with_suffix("")
    if not path.is_dir():
        raise UserError(f"run folder {path} does not exist; pass a folder made by train/train.py")
    return checkpoint_stem(path, which)


def read_checkpoint(path: str | Path, which: str = "best") -> tuple[dict[str, torch.Tensor], CheckpointSpec]:
    """The head's tensors and the spec, checked against each other; nothing is unpickled."""
    stem = _resolve_stem(path, which)
    spec_file, tensor_file = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    if not spec_file.is_file() or not tensor_file.is_file():
        present = sorted(p.name for p in stem.parent.glob("checkpoint_*.json"))
        hint = f"it has {', '.join(present)}" if present else "train a model there first"
        raise UserError(
            f"{stem.parent} holds no {stem.name} checkpoint ({spec_file.name} + {tensor_file.name}); {hint}"
        )
    damaged = "the checkpoint is damaged: use the other one (--checkpoint best or last) or retrain"
    try:
        raw = json.loads(spec_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{spec_file} is not valid JSON ({error}); {damaged}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{spec_file} holds a JSON {type(raw).__name__}, not a checkpoint spec; {damaged}")
    if raw.get("format") != FORMAT or raw.get("version") not in READABLE_VERSIONS:
        readable = ", ".join(map(str, READABLE_VERSIONS[:-1])) + f" or {READABLE_VERSIONS[-1]}"
        raise UserError(
            f"{spec_file} is not a {FORMAT} version {readable} spec (format {raw.get('format')!r}, version {raw.get('version')!r})"
        )
    if raw["version"] == 1:
        raw = {VERSION_1_NAMES.get(key, key): value for key, value in raw.items()}
    if sha256_file(tensor_file) != raw.get("tensors_sha256"):
        raise UserError(
            f"{tensor_file.name} does not match {spec_file.name} (an interrupted save?); use the other checkpoint or retrain"
        )
    names = {f.name for f in fields(CheckpointSpec)}
    missing = sorted(n for n in names if n not in raw and n not in ("info", "train_blocks"))
    if missing:
        raise UserError(f"{spec_file} lacks the keys {', '.join(missing)}; it was not written by models.checkpoint")
    spec = CheckpointSpec(**{k: v for k, v in raw.items() if k in names})
    if spec.train_blocks != TRAIN_ALL and (type(spec.train_blocks) is not int or spec.train_blocks < 0):
        raise UserError(f"{spec_file} has train_blocks {spec.train_blocks!r}, not a block count or 'all'; {damaged}")
    try:
        tensors = load_file(str(tensor_file))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"{tensor_file} cannot be read ({str(error).splitlines()[0][:120]}); {damaged}") from None
    return tensors, spec


def load_checkpoint(
    run_dir: str | Path,
    which: str = "best",
    weights: str | None = None,
    allow_other_weights: bool = False,
    device: str | torch.device = "cpu",
) -> tuple[Segmenter, CheckpointSpec]:
    """The trained model (backbone rebuilt by name from `weights`, its fine-tuned blocks and the head from the
    checkpoint) and its spec: `read_checkpoint` then `build_model`."""
    tensors, spec = read_checkpoint(run_dir, which)
    return build_model(tensors, spec, run_dir, weights, allow_other_weights, device), spec


def build_model(
    tensors: dict[str, torch.Tensor],
    spec: CheckpointSpec,
    run_dir: str | Path,
    weights: str | None = None,
    allow_other_weights: bool = False,
    device: str | torch.device = "cpu",
) -> Segmenter:
    """The model of a checkpoint `read_checkpoint` gave: apart from it, so a command can check its other arguments
    (a dataset, a view) on the spec alone before it spends seconds building a backbone.

    The backbone weights must hash to what the head was trained on; `allow_other_weights` turns
    that error into a warning (features from other weights make the head's predictions meaningless).
    A `train_blocks: all` checkpoint holds the whole backbone and needs no weights.
    """
    whole = spec.train_blocks == TRAIN_ALL
    with warnings.catch_warnings():
        if whole:  # built random, then every backbone tensor comes from the checkpoint
            warnings.simplefilter("ignore", RandomBackboneWarning)
        backbone = build_backbone(spec.backbone, weights=None if whole else weights, layers=spec.layers, frozen=True)
    if spec.train_blocks:
        trained = {k[len(CHECKPOINT_PREFIX) :]: v for k, v in tensors.items() if k.startswith(CHECKPOINT_PREFIX)}
        backbone.load_trained_weights(trained, spec.train_blocks)
    tensors = {k: v for k, v in tensors.items() if not k.startswith(CHECKPOINT_PREFIX)}
    if not whole and backbone.weights_hash != spec.weights_hash:
        given = (
            "no weights were given (random backbone)"
            if backbone.weights_hash == "random"
            else f"the weights given hash to {backbone.weights_hash[:12]}"
        )
        message = (
            f"{run_dir} was trained on backbone weights {spec.weights_hash[:12]} but {given}; "
            f"pass the training weights with --weights or DINO_WEIGHTS"
        )
        if not allow_other_weights:
            raise UserError(message)
        warnings.warn(message, stacklevel=2)
    head_config = {k: v for k, v in spec.head_config.items() if k not in LOSS_ONLY_OPTIONS}
    head = build_head(spec.head, backbone.embed_dim, len(spec.layers), spec.num_classes, **head_config)
    result = head.load_state_dict(tensors, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(
            f"{run_dir}'s weights do not fit head {spec.head!r} with its spec's config "
            f"(missing: {', '.join(result.missing_keys[:5]) or 'none'}; unexpected: {', '.join(result.unexpected_keys[:5]) or 'none'})"
        )
    return Segmenter(backbone, head).to(device).eval()


load_run_checkpoint = load_checkpoint  # the name docs/architecture.md uses


def init_head_from(
    head: SegHead, run_dir: str | Path, which: str = "best", classes: Sequence[str] | None = None
) -> WarmStart:
    """Warm start `head` from another run's head: every tensor but the classifier when the classes differ.

    Classes differ when their count differs or, given `classes`, when the names do (same count,
    other taxonomy). Any other mismatch means another backbone or head config: a UserError.
    """
    tensors, spec = read_checkpoint(run_dir, which)  # the head only: fine-tuned backbone blocks are not warm-started
    if spec.head != head.name:
        raise UserError(f"cannot warm start a {head.name!r} head from {run_dir}, which trained a {spec.head!r} head")
    same_classes = spec.num_classes == head.num_classes and (classes is None or list(classes) == spec.classes)
    own = head.state_dict()
    kept, skipped, clashes = [], [], []
    for key, value in own.items():
        is_classifier = key.startswith(head.classifier_prefixes)
        if is_classifier and not same_classes:
            skipped.append(key)
        elif key in tensors and tensors[key].shape == value.shape:
            kept.append(key)
        else:
            clashes.append(f"{key} {tuple(value.shape)} vs {tuple(tensors[key].shape) if key in tensors else 'absent'}")
    if clashes:
        raise UserError(
            f"{run_dir}'s head does not fit this one (another backbone, layers or head config?): {'; '.join(clashes[:5])}"
        )
    head.load_state_dict({k: tensors[k] for k in kept}, strict=False)
    return WarmStart(kept=kept, skipped=skipped)
