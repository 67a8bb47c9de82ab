"""The training loop, plain PyTorch, readable top to bottom (nanoGPT-style).

`train(config)` takes a config resolved at the command line (`train.config.resolve_config`) and runs
named phases: `open_run` (prepared data, run folder, saved state), `build_segmenter`,
`prepare_training_data` (feature cache or live views), `make_optimization`, `restore`, then
`train_loop`: `config.steps` AdamW steps with warm-up and poly/cosine decay, validating on the full
val images every `eval_every` steps with the sliding window `evaluate` uses (`validate_and_save`). It
keeps the best checkpoint by val mIoU and the last one, and a resumable training state that
`--resume` restores exactly (model, optimizer, scheduler, step, RNG). The loop changes only a
`RunState`. Under `torchrun` it runs DistributedDataParallel.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn

from common.errors import UserError
from common.fileio import write_bytes_atomic, write_text_atomic
from common.names import check_name
from common.progress import progress as progress_bar
from common.progress import write as progress_write
from common.runtime import Runtime, resolve_runtime
from models import checkpoint as run_checkpoint
from models.backbones import build_backbone
from models.heads import build_head
from models.metrics import ConfusionAccumulator, SegmentationMetrics, compute_metrics
from models.segmenter import Segmenter
from models.sliding_window import predict_logits
from prepare.layout import PreparedDataset, classes_text, palette_text
from train import feature_cache
from train.config import TrainConfig, check_resolved, config_dict
from train.data import (
    FullImages,
    LiveViews,
    Sample,
    bank_for,
    class_pixel_counts,
    file_hashes,
    inverse_sqrt_weights,
    load_samples,
)
from train.tensorboard_images import Previews, log_validation_images

STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
log = logging.getLogger("reefseg.train")


@dataclass(frozen=True)
class Distributed:
    """Where this process stands among `torchrun`'s processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite: training stops and the last good checkpoint stays."""


# ----------------------------------------------------------------------------- set-up


def setup_distributed(runtime: Runtime) -> tuple[Distributed, Runtime]:
    """Join the `torchrun` process group when there is one (NCCL on GPUs, gloo on CPUs)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun, not a project setting
    if world_size == 1:
        return Distributed(), runtime
    local_rank = int(os.environ["LOCAL_RANK"])
    if runtime.device.type == "cuda":
        runtime = replace(runtime, device=torch.device("cuda", local_rank))
        torch.cuda.set_device(runtime.device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if runtime.device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), world_size, local_rank), runtime


def train_runtime(config: TrainConfig) -> Runtime:
    """The device and precision of training, of its feature cache and of its validation (`evaluate` decides alike)."""
    return resolve_runtime(config.device, config.precision)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of `config.lr` at `step`: linear warm-up, then poly or cosine decay to min_lr_ratio."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    decay = (
        (1 - progress) ** config.poly_power if config.schedule == "poly" else 0.5 * (1 + math.cos(math.pi * progress))
    )
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * decay


def step_batches(
    num_items: int, batch_size: int, seed: int, start_step: int, steps: int, dist_info: Distributed
) -> Iterator[list[tuple[int, int]]]:
    """This process's share of each step's batch, as (epoch, item) pairs, a pure function of the step.

    Each epoch is a seeded permutation of the items; step s takes the s-th slice of its epoch. A
    resumed run therefore sees exactly the batches an uninterrupted one would, and `torchrun`'s
    processes split every global batch between them.
    """
    per_epoch = max(1, num_items // batch_size)
    order, order_epoch = torch.empty(0, dtype=torch.long), -1
    for step in range(start_step, steps):
        epoch, index = divmod(step, per_epoch)
        if epoch != order_epoch:
            order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
            order_epoch = epoch
        items = order[(index * batch_size + torch.arange(batch_size)) % num_items]
        yield [(epoch, int(i)) for i in items[dist_info.rank :: dist_info.world_size]]


# ----------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(
    segmenter: Segmenter,
    images: FullImages,
    classes: list[str],
    config: TrainConfig,
    runtime: Runtime,
    dist_info: Distributed,
    window_dirs: list[Path] | None = None,
    previews: Previews | None = None,
) -> SegmentationMetrics:
    """mIoU over whole val images, predicted window by window exactly as `evaluate` does.

    With `window_dirs` (one per image) the backbone maps of the windows come from the feature
    cache after the first validation. Under `torchrun` each process predicts its share of the
    images and the confusion matrices are summed. `previews` keeps this process's first images
    and predictions (for TensorBoard).
    """
    was_training = segmenter.training
    segmenter.eval()
    accumulator = ConfusionAccumulator(len(classes))
    mine = range(dist_info.rank, len(images), dist_info.world_size)
    for index in progress_bar(
        mine, desc="validating", unit="image", leave=False, dynamic_ncols=True, disable=not dist_info.main
    ):
        image, mask = images[index]
        windows = (
            feature_cache.WindowCache(window_dirs[index], segmenter.backbone.frozen_names()) if window_dirs else None
        )

        def forward(crops: Tensor, windows: feature_cache.WindowCache | None = windows) -> Tensor:  # bound per image
            with runtime.autocast():
                if windows is None:
                    return segmenter(crops).float()
                frozen = windows.features(crops, segmenter.frozen_features)
                return segmenter.head_logits(
                    segmenter.features_from_frozen(frozen, crops.shape[-2:]), crops.shape[-2:]
                ).float()

        logits = predict_logits(
            forward, image.to(runtime.device), len(classes), config.window, config.window_stride, config.val_batch_size
        )
        if windows is not None:
            windows.save()
        prediction = logits.argmax(0).cpu()
        accumulator.update(mask, prediction)
        if previews is not None:
            previews.add(image, mask, prediction)
    segmenter.train(was_training)
    matrix = torch.from_numpy(accumulator.matrix)
    if dist_info.world_size > 1:
        matrix = matrix.to(runtime.device)
        dist.all_reduce(matrix)
    return compute_metrics(matrix.cpu().numpy(), classes, background_index=0)


# ----------------------------------------------------------------------------- run folder


def run_folder(config: TrainConfig) -> Path:
    """`runs_dir/name` of a resolved config; the name (given, or made from the head and the prepared folder) is never a path."""
    return Path(config.runs_dir) / check_name(config.name, "run name", "pass --name with a plain name")


def start_run_folder(run_dir: Path, config: TrainConfig, dataset: PreparedDataset) -> None:
    """A fresh run folder with the config as run, the classes and the palette; never over an old run."""
    if (run_dir / STATE_FILE).exists():
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it or --name to start another")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(config_dict(config), sort_keys=False))
    write_text_atomic(run_dir / "classes.txt", classes_text(dataset.classes[1:]))
    write_text_atomic(run_dir / "palette.txt", palette_text(dataset.palette[1:]))
    (run_dir / METRICS_FILE).unlink(missing_ok=True)


def setup_logging(run_dir: Path, main: bool) -> None:
    """Log lines to `train.log` in the run folder and to the console, from the main process only."""
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO if main else logging.WARNING)
    if main:
        handler = logging.FileHandler(run_dir / LOG_FILE)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter("%(message)s"))
        console.emit = lambda record: progress_write(console.format(record), file=sys.stderr)  # type: ignore[method-assign]
        log.addHandler(console)


STATE_KEYS = ("step", "classes", "head", "optimizer", "scheduler", "rng", "best", "evals_without_gain")


def save_state(run_dir: Path, state: dict[str, Any]) -> None:
    """The resumable training state (tensors and plain data only: `torch.load(weights_only=True)` reads it).

    Serialized in memory, then written atomically: a full disk is then one sentence (torch.save's own error on
    a full disk is an opaque "unexpected pos"), and the previous state stays whole.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(run_dir / STATE_FILE, buffer.getvalue())


def load_state(run_dir: Path) -> dict[str, Any] | None:
    """The training state to resume, or None when the run stopped before saving one (it then starts from step 0).

    A damaged state (truncated, not a training state) is one sentence saying what still works.
    """
    path = run_dir / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for damaged files
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        state, damage = None, f"cannot be read ({reason})"
    else:
        missing = [key for key in STATE_KEYS if not isinstance(state, dict) or key not in state]
        damage = f"is not a training state (no {', '.join(missing)})" if missing else ""
    if damage:
        raise UserError(
            f"{path} {damage}, so the run cannot resume; start a new run with --name <new name> "
            f"(add --init-from {run_dir} to warm-start from its checkpoint), or delete {path} to start this one again from step 0"
        )
    return state


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / METRICS_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def trim_metrics(run_dir: Path, step: int) -> None:
    """Drop evaluations after `step` (a resumed run redoes them) so metrics.jsonl has each step once."""
    path = run_dir / METRICS_FILE
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        write_text_atomic(path, "".join(line + "\n" for line in kept))


def out_of_memory_advice(config: TrainConfig, phase: str) -> str:
    """Which setting to lower, for the phase that ran out of GPU memory."""
    advice = {
        "caching features": f"--extract-batch-size (now {config.extract_batch_size})",
        "validating": f"--val-batch-size (now {config.val_batch_size})",
    }.get(phase, f"--batch-size (now {config.batch_size}) or --crop (now {config.crop})")
    return f"the GPU ran out of memory while {phase}; lower {advice}"


@contextmanager
def advice_on_out_of_memory(config: TrainConfig, phase: str) -> Iterator[None]:
    """A GPU out-of-memory error inside the block becomes a UserError naming the setting to lower for `phase`."""
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        raise UserError(out_of_memory_advice(config, phase)) from None


def _barrier(dist_info: Distributed) -> None:
    if dist_info.world_size > 1:
        dist.barrier()


class _StepBatches:
    """`step_batches` as a DataLoader batch sampler."""

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return step_batches(*self.args)


# ----------------------------------------------------------------------------- the phases


class TrainStep(nn.Module):
    """One batch's losses as a forward pass, so DistributedDataParallel sees (and syncs) it."""

    def __init__(self, segmenter: Segmenter) -> None:
        super().__init__()
        self.segmenter = segmenter

    def forward(self, inputs: Tensor | list[Tensor], target: Tensor) -> dict[str, Tensor]:
        if isinstance(inputs, list):  # the cached frozen part: trained blocks (if any) then the head
            return self.segmenter.head.loss(self.segmenter.features_from_frozen(inputs, target.shape[-2:]), target)
        return self.segmenter.loss(inputs, target)


@dataclass(frozen=True)
class Run:
    """What every phase reads and none changes: the config, the folder, the data's classes, where it computes."""

    config: TrainConfig
    folder: Path
    dataset: PreparedDataset
    samples: dict[str, list[Sample]]
    runtime: Runtime
    dist_info: Distributed

    @property
    def classes(self) -> list[str]:
        return list(self.dataset.classes)


@dataclass(frozen=True)
class TrainingData:
    """What the loop trains on (cached features or live views) and validates on (whole val images)."""

    train: feature_cache.CachedViews | LiveViews
    val_images: FullImages
    window_dirs: list[Path] | None  # per val image, its windows' cached backbone maps (None: validate live)
    cache_seconds: float = 0.0


@dataclass(frozen=True)
class Optimization:
    """The module a step calls (DDP-wrapped under torchrun), the trained parameters, optimizer and schedule.

    The optimizer's param groups: the head's parameters, then the trained backbone blocks' (lr times
    `backbone_lr_mult`) with weight decay on matrices and none on biases, norms, layer scales and tokens.
    """

    model: nn.Module
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR


@dataclass
class RunState:
    """Where the run stands: all the loop changes, saved in train_state.pt and restored exactly by --resume."""

    step: int = 0
    best_miou: float = -math.inf
    best_step: int = 0
    evals_without_gain: int = 0
    saved_step: int = 0  # the step of the last saved checkpoint (0: none yet)
    last_miou: float | None = None
    stopped_early: bool = False
    validation_seconds: float = 0.0

    def record(self, miou: float) -> bool:
        """Count one validation's mIoU; True when it is the best so far (NaN never is)."""
        miou = -math.inf if math.isnan(miou) else miou
        if miou > self.best_miou:
            self.best_miou, self.best_step, self.evals_without_gain = miou, self.step, 0
            return True
        self.evals_without_gain += 1
        return False


def train(config: TrainConfig) -> dict[str, Any]:
    """Train one head as the resolved `config` says; returns a summary (run folder, best mIoU and step, steps run)."""
    check_resolved(config)
    dist_info, runtime = setup_distributed(train_runtime(config))
    try:
        with advice_on_out_of_memory(config, "setting up"):
            return run_training(config, dist_info, runtime)
    except NonFiniteLoss as error:
        raise UserError(f"{error}; lower --lr (now {config.lr}) or use --precision fp32") from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_training(config: TrainConfig, dist_info: Distributed, runtime: Runtime) -> dict[str, Any]:
    """The phases in order: the run folder, the segmenter, the training data, the restored state, the loop."""
    run, saved = open_run(config, runtime, dist_info)
    segmenter = build_segmenter(run)
    with advice_on_out_of_memory(config, "caching features"):
        data = prepare_training_data(run, segmenter)
    optimization = make_optimization(run, segmenter)
    state = restore(run, segmenter, optimization, saved)
    loader = iter(make_loader(run, data, state.step))
    # The loop's randomness (dropout) restarts from the seed, or from where the interrupted run was:
    # whatever set-up consumed (cache filling, loader seeds) never changes the run.
    torch.manual_seed(config.seed + 1)
    if saved is not None:
        set_rng_state(saved["rng"])
    started = time.perf_counter()
    with advice_on_out_of_memory(config, "training"):
        train_loop(run, segmenter, data, optimization, state, loader)
    train_seconds = time.perf_counter() - started - state.validation_seconds
    return {
        "run": str(run.folder), "steps": state.step, "best_miou": state.best_miou, "best_step": state.best_step,
        "last_miou": state.last_miou, "stopped_early": state.stopped_early, "main": dist_info.main,
        "cache_seconds": data.cache_seconds, "train_seconds": train_seconds,
        "validation_seconds": state.validation_seconds,
    }  # fmt: skip


def open_run(config: TrainConfig, runtime: Runtime, dist_info: Distributed) -> tuple[Run, dict[str, Any] | None]:
    """The prepared data checked, the run folder started (or its saved state read for --resume), the log opened."""
    dataset, samples = load_samples(Path(config.data_dir))
    folder = run_folder(config)
    views = len(samples["train"]) * config.views_per_image
    if config.batch_size > views:  # every step would repeat views within its batch
        raise UserError(
            f"batch_size {config.batch_size} is larger than the data: {len(samples['train'])} training images x "
            f"{config.views_per_image} views = {views}; lower --batch-size or raise --views-per-image"
        )
    saved = load_state(folder) if config.resume else None
    if config.resume and saved is None:
        print(f"note: {folder} stopped before its first checkpoint; starting it again from step 0", file=sys.stderr)
    if saved is not None and saved["classes"] != dataset.classes:
        raise UserError(
            f"{folder} was trained on {len(saved['classes'])} classes but {dataset.root} has {len(dataset.classes)}; "
            "resume with the prepared folder it was trained on, or start a new run with --init-from"
        )
    if saved is not None:
        check_same_fine_tuning(folder, config, saved)
    if saved is None and dist_info.main:
        start_run_folder(folder, config, dataset)
    _barrier(dist_info)
    setup_logging(folder, dist_info.main)
    sizes = f"{len(samples['train'])} train, {len(samples['val'])} val images, {len(dataset.classes)} classes"
    log.info(
        f"run {folder} on {dataset.root} ({sizes}), device {runtime.device} ({runtime.precision}), "
        f"{dist_info.world_size} process(es)"
    )
    return Run(config, folder, dataset, samples, runtime, dist_info), saved


def check_same_fine_tuning(folder: Path, config: TrainConfig, saved: dict[str, Any]) -> None:
    """A run resumes with the backbone blocks (and LoRA) it started with: other ones have no saved weights or optimizer state."""
    started = (saved.get("train_blocks", 0), saved.get("lora_rank", 0))
    if started != (config.train_blocks, config.lora_rank):
        raise UserError(
            f"{folder} was trained with train_blocks {started[0]} and lora_rank {started[1]}, not "
            f"{config.train_blocks} and {config.lora_rank}; resume with those, or start a new run with --name"
        )


def build_segmenter(run: Run) -> Segmenter:
    """Frozen backbone + fresh (or warm-started) head on the device; the same initialisation in every process."""
    config = run.config
    torch.manual_seed(config.seed)
    weights = config.weights or None
    layers = config.layers if config.layers is not None else (None if config.head == "linear" else 4)
    backbone = build_backbone(config.backbone, weights=weights, layers=layers)
    backbone.set_trainable(config.train_blocks, config.lora_rank)
    if config.train_blocks:
        trained = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
        which = (
            "the whole backbone"
            if config.train_blocks == "all"
            else f"blocks {backbone.first_trained}-{backbone.num_layers - 1}"
        )
        lora = f", LoRA rank {config.lora_rank} on their attention layers" if config.lora_rank else ""
        log.info(
            f"fine-tuning {which} of {backbone.name}{lora}: {trained:,} parameters at lr x {config.backbone_lr_mult}"
        )
    if weights is None:
        log.warning(
            f"WARNING: backbone {backbone.name} has RANDOM weights; pass --weights or set DINO_WEIGHTS for meaningful features"
        )
    for key in ("crop", "window"):
        pixels = getattr(config, key)
        if pixels % backbone.patch_size:
            fit = pixels // backbone.patch_size * backbone.patch_size or backbone.patch_size
            raise UserError(
                f"{key} {pixels} is not a multiple of {backbone.name}'s patch size {backbone.patch_size}; use {fit}"
            )
    head_options = dict(config.head_config)
    if config.class_weights:
        head_options["class_weights"] = inverse_sqrt_weights(class_pixel_counts(run.dataset, "train"))
        weights_text = ", ".join(f"{c} {w:.3f}" for c, w in zip(run.classes, head_options["class_weights"]))
        log.info(f"class weights (1/sqrt of training pixel frequency): {weights_text}")
    head = build_head(config.head, backbone.embed_dim, len(backbone.layers), len(run.classes), **head_options)
    head.to(
        memory_format=torch.channels_last
    )  # oneDNN and cuDNN convolutions run faster on NHWC (measured 10-40% on CPU)
    segmenter = Segmenter(backbone, head).to(run.runtime.device)
    if config.init_from:
        warm = run_checkpoint.init_head_from(head, Path(config.init_from).expanduser(), classes=run.classes)
        log.info(
            f"warm start from {config.init_from}: kept {len(warm.kept)} tensors, fresh {', '.join(warm.skipped) or 'none'}"
        )
    return segmenter


def prepare_training_data(run: Run, segmenter: Segmenter) -> TrainingData:
    """Cached backbone features of the fixed view bank (filled where missing), or the views decoded live."""
    config, dist_info = run.config, run.dist_info
    train_samples, val_samples = run.samples["train"], run.samples["val"][: config.max_val_images or None]
    scale_range = (config.scale_range[0], config.scale_range[1])
    if config.train_blocks == "all" and config.cache and dist_info.main:
        log.info("train_blocks all: no feature cache (every part of the backbone trains), the views are decoded live")
    if not config.cache or config.train_blocks == "all":
        views = LiveViews(
            train_samples, config.views_per_image, config.crop, scale_range, config.seed, config.fresh_views
        )
        return TrainingData(views, FullImages(val_samples), None)
    cache_dir = Path(config.cache_dir)
    root = feature_cache.backbone_dir(cache_dir, segmenter.backbone, run.runtime.precision)
    banks = [bank_for(s, config.views_per_image, config.crop, scale_range, config.seed) for s in train_samples]
    stored = segmenter.backbone.frozen_names()
    entries = [
        feature_cache.cache_entry(root, cache_dir / "labels", image_hash, mask_hash, bank, stored)
        for (image_hash, mask_hash), bank in zip(file_hashes(train_samples), banks)
    ]
    extract = feature_cache.make_extractor(segmenter.frozen_features, run.runtime)
    jobs = [(s.image_path, s.mask_path, bank) for s, bank in zip(train_samples, banks)]
    started = time.perf_counter()
    missing = feature_cache.missing_entries(entries)
    _barrier(dist_info)  # every process has listed the same missing entries before any is written
    share = missing[dist_info.rank :: dist_info.world_size]
    feature_cache.fill_cache(jobs, entries, extract, config.extract_batch_size, config.workers, share, dist_info.main)
    _barrier(dist_info)
    seconds = time.perf_counter() - started
    reused = len(entries) - len(missing)
    log.info(
        f"feature cache {root}: {len(entries)} images, {len(missing)} computed in {seconds:.1f} s, {reused} reused"
    )
    window_dirs = [
        feature_cache.window_cache_dir(root, image_hash, config.window, config.window_stride)
        for image_hash, _ in file_hashes(val_samples)
    ]
    cached = feature_cache.CachedViews(entries, config.views_per_image)
    return TrainingData(cached, FullImages(val_samples), window_dirs, seconds)


def make_optimization(run: Run, segmenter: Segmenter) -> Optimization:
    """AdamW over the head's trainable parameters, warm-up then decay; DDP (SyncBatchNorm on GPUs) under torchrun."""
    config, device = run.config, run.runtime.device
    step_module = TrainStep(segmenter)
    model: nn.Module = step_module
    if run.dist_info.world_size > 1:
        if device.type == "cuda":  # batch statistics over every GPU's share of the batch (CPUs have no SyncBatchNorm)
            segmenter.head = nn.SyncBatchNorm.convert_sync_batchnorm(segmenter.head)
        model = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None
        )
    groups = param_groups(segmenter, config)
    params = [p for group in groups for p in group["params"]]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    return Optimization(model, params, optimizer, scheduler)


def param_groups(segmenter: Segmenter, config: TrainConfig) -> list[dict[str, Any]]:
    """The head at lr with weight decay; trained backbone parameters at lr x backbone_lr_mult, decayed only when
    they are matrices (linear and patch-embedding weights, LoRA adapters), never biases, norms, layer scales,
    position embeddings or the cls and register tokens (the usual ViT fine-tuning policy)."""
    groups: list[dict[str, Any]] = [{"params": [p for p in segmenter.head.parameters() if p.requires_grad]}]
    trained = [(n, p) for n, p in segmenter.backbone.named_parameters() if p.requires_grad]
    lr = config.lr * config.backbone_lr_mult
    decayed = [p for n, p in trained if p.ndim >= 2 and not n.endswith(("pos_embed", "cls_token", "reg_token"))]
    kept = [p for n, p in trained if not any(p is q for q in decayed)]
    for params, decay in ((decayed, config.weight_decay), (kept, 0.0)):
        if params:
            groups.append({"params": params, "lr": lr, "weight_decay": decay})
    return groups


def restore(run: Run, segmenter: Segmenter, optimization: Optimization, saved: dict[str, Any] | None) -> RunState:
    """A fresh state, or the interrupted run's: head, optimizer, schedule, step, best mIoU (later metrics dropped)."""
    if saved is None:
        return RunState()
    segmenter.head.load_state_dict(saved["head"])
    if run.config.train_blocks:  # check_same_fine_tuning made sure the state holds these blocks
        segmenter.backbone.load_trainable_state(saved["backbone"])
    optimization.optimizer.load_state_dict(saved["optimizer"])
    optimization.scheduler.load_state_dict(saved["scheduler"])
    best = saved["best"]
    state = RunState(saved["step"], best["miou"], best["step"], saved["evals_without_gain"], saved_step=saved["step"])
    if run.dist_info.main:
        trim_metrics(run.folder, state.step)
    log.info(f"resumed at step {state.step} (best val mIoU {state.best_miou:.4f} at step {state.best_step})")
    return state


def make_loader(run: Run, data: TrainingData, start_step: int) -> torch.utils.data.DataLoader:
    """This process's share of every step's batch from `start_step` on (`step_batches`), loaded by the workers."""
    config, dist_info = run.config, run.dist_info
    per_process = len(next(iter(step_batches(len(data.train), config.batch_size, config.seed, 0, 1, dist_info))))
    if per_process == 0:
        raise UserError(
            f"batch_size {config.batch_size} is smaller than the {dist_info.world_size} processes; raise it"
        )
    return torch.utils.data.DataLoader(
        data.train,
        batch_sampler=_StepBatches(
            len(data.train), config.batch_size, config.seed, start_step, config.steps, dist_info
        ),
        num_workers=config.workers,
        pin_memory=run.runtime.device.type == "cuda",
        persistent_workers=False,
    )


# ----------------------------------------------------------------------------- the loop


def train_loop(
    run: Run,
    segmenter: Segmenter,
    data: TrainingData,
    optimization: Optimization,
    state: RunState,
    batches: Iterator[Any],
) -> None:
    """Step until `config.steps`, logging every `log_every` and validating (and saving) every `eval_every` steps."""
    config = run.config
    writer = open_writer(run, state.step)
    bar = progress_bar(
        total=config.steps,
        initial=state.step,
        desc=f"training {config.head}",
        unit="step",
        disable=not run.dist_info.main,
        dynamic_ncols=True,
    )
    start_step, started = state.step, time.perf_counter()
    segmenter.train()
    try:
        for inputs, target in batches:
            losses, lr = train_step(run, optimization, inputs, target, state)
            state.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss']:.4f}", lr=f"{lr:.2e}")
            if writer is not None and (state.step % config.log_every == 0 or state.step == config.steps):
                per_step = (time.perf_counter() - started) / (state.step - start_step)
                log_step(writer, config, state.step, losses, lr, per_step)
            if state.step % config.eval_every == 0 or state.step == config.steps:
                if validate_and_save(run, segmenter, data, optimization, state, writer, losses["loss"]):
                    log.info(f"early stop at step {state.step}: no better val mIoU in {config.patience} validations")
                    state.stopped_early = True
                    break
    finally:
        bar.close()
        if writer is not None:
            writer.close()


def train_step(
    run: Run, optimization: Optimization, inputs: Tensor | list[Tensor], target: Tensor, state: RunState
) -> tuple[dict[str, float], float]:
    """One optimizer step on one batch; returns the losses (averaged over processes) and the lr it used."""
    device = run.runtime.device
    # cached float16 maps: made float32 and channels-last in one copy, not two (benchmarks/README.md)
    if isinstance(inputs, list):
        inputs = [
            x.to(
                device,
                torch.float32,
                non_blocking=True,
                memory_format=torch.channels_last if x.dim() == 4 else torch.contiguous_format,
            )
            for x in inputs
        ]
    else:
        inputs = inputs.to(device, non_blocking=True)
    with run.runtime.autocast():
        losses = optimization.model(inputs, target.to(device, non_blocking=True))
    losses["loss"].backward()
    reported = torch.stack([v.detach().float() for v in losses.values()])
    if run.dist_info.world_size > 1:
        dist.all_reduce(reported)
        reported /= run.dist_info.world_size
    if not torch.isfinite(reported).all():
        last = run.folder / "checkpoint_last"
        kept = (
            f"the last good checkpoint is {last} (step {state.saved_step})"
            if state.saved_step
            else "no checkpoint was saved yet"
        )
        loss = reported[list(losses).index("loss")].item()
        raise NonFiniteLoss(f"the loss became {loss} at step {state.step + 1} and training stopped; {kept}")
    if run.config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(optimization.params, run.config.grad_clip)
    optimization.optimizer.step()
    optimization.optimizer.zero_grad(set_to_none=True)
    lr = optimization.optimizer.param_groups[0]["lr"]
    optimization.scheduler.step()
    return dict(zip(losses, reported.tolist())), lr


def validate_and_save(
    run: Run,
    segmenter: Segmenter,
    data: TrainingData,
    optimization: Optimization,
    state: RunState,
    writer: Any,
    train_loss: float,
) -> bool:
    """Validate, log, save best/last checkpoints and the training state; True (in every process) to stop early."""
    with advice_on_out_of_memory(run.config, "validating"):
        started = time.perf_counter()
        previews = Previews()
        metrics = validate(
            segmenter, data.val_images, run.classes, run.config, run.runtime, run.dist_info, data.window_dirs, previews
        )
    state.validation_seconds += time.perf_counter() - started
    state.last_miou, state.saved_step = metrics.miou, state.step
    stop = [False]
    if run.dist_info.main:
        improved = state.record(metrics.miou)
        log_validation_images(writer, state.step, metrics.matrix, run.classes, run.dataset.palette, previews)
        log_validation(run, writer, state, metrics, optimization.optimizer.param_groups[0]["lr"], train_loss)
        save_run(run, segmenter, optimization, state, metrics, improved)
        stop = [bool(run.config.patience) and state.evals_without_gain >= run.config.patience]
    if run.dist_info.world_size > 1:
        dist.broadcast_object_list(stop, src=0)
    return bool(stop[0])


def save_run(
    run: Run,
    segmenter: Segmenter,
    optimization: Optimization,
    state: RunState,
    metrics: SegmentationMetrics,
    improved: bool,
) -> None:
    """The last (and, when it improved, the best) checkpoint, then the state `--resume` restarts from."""
    config, head = run.config, segmenter.head
    info = {"step": state.step, "val_miou": metrics.miou, "config": config_dict(config)}
    taxonomy = (run.dataset.info.get("taxonomy") or {}).get("name", "")
    spec = run_checkpoint.CheckpointSpec.of(
        segmenter.backbone, head, run.classes, run.dataset.palette, taxonomy, config.window, config.window_stride, info
    )
    backbone = segmenter.backbone
    if improved:
        run_checkpoint.save_run_checkpoint(run.folder, head, spec, "best", backbone)
    run_checkpoint.save_run_checkpoint(run.folder, head, spec, "last", backbone)
    trained = (
        {"backbone": backbone.trainable_state(), "train_blocks": config.train_blocks, "lora_rank": config.lora_rank}
        if config.train_blocks
        else {}
    )
    save_state(run.folder, {
        "step": state.step, "classes": run.classes, "head": head.state_dict(), **trained,
        "optimizer": optimization.optimizer.state_dict(), "scheduler": optimization.scheduler.state_dict(),
        "rng": rng_state(), "best": {"miou": state.best_miou, "step": state.best_step},
        "evals_without_gain": state.evals_without_gain,
    })  # fmt: skip


# ----------------------------------------------------------------------------- logging


def open_writer(run: Run, start_step: int) -> Any:
    """TensorBoard events under the run folder, from the main process only (None elsewhere)."""
    if not run.dist_info.main:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run.folder / "tensorboard"), purge_step=start_step + 1 if start_step else None)


def log_step(
    writer: Any, config: TrainConfig, step: int, losses: dict[str, float], lr: float, seconds_per_step: float
) -> None:
    for key, value in losses.items():
        writer.add_scalar(f"train/{key}", value, step)
    writer.add_scalar("train/lr", lr, step)
    log.info(f"step {step}/{config.steps}: loss {losses['loss']:.4f}, lr {lr:.2e}, {seconds_per_step:.3f} s/step")


def log_validation(
    run: Run, writer: Any, state: RunState, metrics: SegmentationMetrics, lr: float, train_loss: float
) -> None:
    """One line of metrics.jsonl, the TensorBoard scalars and a log line for one validation."""
    per_class = {name: r["iou"] for name, r in zip(run.classes, metrics.per_class())}
    append_metrics(
        run.folder, {"step": state.step, "train_loss": train_loss, "lr": lr, **metrics.summary(), "iou": per_class}
    )
    writer.add_scalar("val/miou", metrics.miou, state.step)
    writer.add_scalar("val/pixel_accuracy", metrics.pixel_accuracy, state.step)
    for name, iou in per_class.items():
        if iou is not None:
            writer.add_scalar(f"val_iou/{name}", iou, state.step)
    writer.flush()
    log.info(
        f"step {state.step}: val mIoU {metrics.miou:.4f} (best {state.best_miou:.4f} at step {state.best_step}), "
        f"pixel accuracy {metrics.pixel_accuracy:.4f}"
    )
