"""The training loop, plain PyTorch, readable top to bottom (nanoGPT-style).

`train(config, settings)` prepares everything (data, backbone, head, feature cache, optimizer),
then runs `config.steps` AdamW steps with warm-up and poly/cosine decay, validating on the full
val images every `eval_every` steps with the sliding window `evaluate` uses. It keeps the best
checkpoint by val mIoU and the last one, and a resumable training state that `--resume` restores
exactly (model, optimizer, scheduler, step, RNG). Under `torchrun` it runs DistributedDataParallel.
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn

from common.cli import UserError
from common.fileio import write_bytes_atomic, write_text_atomic
from common.names import check_name
from common.progress import progress as progress_bar
from common.progress import write as progress_write
from common.runtime import Runtime, resolve_runtime
from common.settings import Settings
from models import checkpoint as run_checkpoint
from models.backbones import build_backbone, get_spec
from models.heads import build_head
from models.segmenter import Segmenter
from models.sliding_window import default_window_stride, predict_logits
from prepare.layout import PreparedDataset, classes_text, palette_text
from train import feature_cache
from train.config import DEFAULT_WINDOW_PATCHES, TrainConfig, config_dict
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
from train.metrics import ConfusionAccumulator, SegmentationMetrics, compute_metrics

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


def train_runtime(config: TrainConfig, default_device: str = "auto") -> Runtime:
    """The device and precision of training, of its feature cache and of its validation (`evaluate` decides alike)."""
    return resolve_runtime(config.device or default_device, config.precision)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of `config.lr` at `step`: linear warm-up, then poly or cosine decay to min_lr_ratio."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    decay = (1 - progress) ** config.poly_power if config.schedule == "poly" else 0.5 * (1 + math.cos(math.pi * progress))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * decay


def step_batches(num_items: int, batch_size: int, seed: int, start_step: int, steps: int, dist_info: Distributed) -> Iterator[list[tuple[int, int]]]:
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


def default_data_dir(settings: Settings, dataset: str, taxonomy: str) -> Path:
    """The folder `prepare_data.py` writes by default for this dataset and taxonomy."""
    from prepare.cli import default_output_dir

    return default_output_dir(settings, dataset or settings.demo_dataset, taxonomy or settings.label_taxonomy)


# ----------------------------------------------------------------------------- validation


def with_default_window(config: TrainConfig) -> TrainConfig:
    """The sliding window of validation (and of the checkpoint, so of `evaluate`) made concrete: `window: 0` is
    DEFAULT_WINDOW_PATCHES patches of the config's backbone, `window_stride: 0` the window itself."""
    window = config.window or DEFAULT_WINDOW_PATCHES * get_spec(config.backbone).patch_size
    return replace(config, window=window, window_stride=default_window_stride(window, config.window_stride))


@torch.no_grad()
def validate(segmenter: Segmenter, images: FullImages, classes: list[str], config: TrainConfig, runtime: Runtime,
             dist_info: Distributed, window_dirs: list[Path] | None = None) -> SegmentationMetrics:
    """mIoU over whole val images, predicted window by window exactly as `evaluate` does.

    With `window_dirs` (one per image) the backbone maps of the windows come from the feature
    cache after the first validation. Under `torchrun` each process predicts its share of the
    images and the confusion matrices are summed.
    """
    was_training = segmenter.training
    segmenter.eval()
    accumulator = ConfusionAccumulator(len(classes))
    mine = range(dist_info.rank, len(images), dist_info.world_size)
    for index in progress_bar(mine, desc="validating", unit="image", leave=False, dynamic_ncols=True, disable=not dist_info.main):
        image, mask = images[index]
        windows = feature_cache.WindowCache(window_dirs[index], segmenter.backbone.layers) if window_dirs else None

        def forward(crops: Tensor, windows: feature_cache.WindowCache | None = windows) -> Tensor:  # bound per image
            with runtime.autocast():
                if windows is None:
                    return segmenter(crops).float()
                return segmenter.head_logits(windows.features(crops, segmenter.forward_features), crops.shape[-2:]).float()

        logits = predict_logits(forward, image.to(runtime.device), len(classes), config.window, config.window_stride, config.val_batch_size)
        if windows is not None:
            windows.save()
        accumulator.update(mask, logits.argmax(0).cpu())
    segmenter.train(was_training)
    matrix = torch.from_numpy(accumulator.matrix)
    if dist_info.world_size > 1:
        matrix = matrix.to(runtime.device)
        dist.all_reduce(matrix)
    return compute_metrics(matrix.cpu().numpy(), classes, background_index=0)


# ----------------------------------------------------------------------------- run folder


def run_folder(config: TrainConfig, settings: Settings, data_dir: Path) -> Path:
    """`runs_dir/<name>`; the name (given, or made from the head and the prepared folder) is never a path."""
    runs_dir = Path(config.runs_dir).expanduser() if config.runs_dir else settings.runs_dir
    return runs_dir / check_name(config.name or f"{config.head}_{data_dir.name}", "run name", "pass --name with a plain name")


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


# ----------------------------------------------------------------------------- the loop


class TrainStep(nn.Module):
    """One batch's losses as a forward pass, so DistributedDataParallel sees (and syncs) it."""

    def __init__(self, segmenter: Segmenter) -> None:
        super().__init__()
        self.segmenter = segmenter

    def forward(self, inputs: Tensor | list[Tensor], target: Tensor) -> dict[str, Tensor]:
        if isinstance(inputs, list):  # cached feature maps go straight to the head
            return self.segmenter.head.loss(inputs, target)
        return self.segmenter.loss(inputs, target)


def train(config: TrainConfig, settings: Settings) -> dict[str, Any]:
    """Train one head as `config` says; returns a summary (run folder, best mIoU and step, steps run)."""
    config = with_default_window(config)
    dist_info, runtime = setup_distributed(train_runtime(config, settings.device))
    status = {"phase": "setting up"}
    try:
        return run_training(config, settings, dist_info, runtime, status)
    except NonFiniteLoss as error:
        raise UserError(f"{error}; lower --lr (now {config.lr}) or use --precision fp32") from None
    except torch.cuda.OutOfMemoryError:
        raise UserError(out_of_memory_advice(config, status["phase"])) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def out_of_memory_advice(config: TrainConfig, phase: str) -> str:
    """Which setting to lower, for the phase that ran out of GPU memory."""
    advice = {
        "caching features": f"--extract-batch-size (now {config.extract_batch_size})",
        "validating": f"--val-batch-size (now {config.val_batch_size})",
    }.get(phase, f"--batch-size (now {config.batch_size}) or --crop (now {config.crop})")
    return f"the GPU ran out of memory while {phase}; lower {advice}"


def _barrier(dist_info: Distributed) -> None:
    if dist_info.world_size > 1:
        dist.barrier()


class _StepBatches:
    """`step_batches` as a DataLoader batch sampler."""

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return step_batches(*self.args)


def run_training(config: TrainConfig, settings: Settings, dist_info: Distributed, runtime: Runtime, status: dict[str, str]) -> dict[str, Any]:
    """Set-up, then the loop; `status["phase"]` says what is running (for the out-of-memory advice)."""
    seed = config.seed if config.seed >= 0 else settings.seed
    workers = config.workers if config.workers >= 0 else settings.workers
    data_dir = Path(config.data_dir).expanduser() if config.data_dir else default_data_dir(settings, config.dataset, config.taxonomy)
    dataset, samples = load_samples(data_dir)
    classes = dataset.classes
    run_dir = run_folder(config, settings, data_dir)
    views = len(samples["train"]) * config.views_per_image
    if config.batch_size > views:  # every step would repeat views within its batch
        raise UserError(
            f"batch_size {config.batch_size} is larger than the data: {len(samples['train'])} training images x "
            f"{config.views_per_image} views = {views}; lower --batch-size or raise --views-per-image"
        )

    state = load_state(run_dir) if config.resume else None
    if config.resume and state is None:
        print(f"note: {run_dir} stopped before its first checkpoint; starting it again from step 0", file=sys.stderr)
    if state is not None and state["classes"] != classes:
        raise UserError(
            f"{run_dir} was trained on {len(state['classes'])} classes but {dataset.root} has {len(classes)}; "
            "resume with the prepared folder it was trained on, or start a new run with --init-from"
        )
    if state is None and dist_info.main:
        start_run_folder(run_dir, config, dataset)
    _barrier(dist_info)
    setup_logging(run_dir, dist_info.main)
    log.info(f"run {run_dir} on {dataset.root} ({len(samples['train'])} train, {len(samples['val'])} val images, {len(classes)} classes), device {runtime.device} ({runtime.precision}), {dist_info.world_size} process(es)")

    # Model: the same random initialisation in every process, from the seed.
    torch.manual_seed(seed)
    weights = config.weights or settings.dino_weights or None
    layers = config.layers if config.layers is not None else (None if config.head == "linear" else 4)
    backbone = build_backbone(config.backbone, weights=weights, layers=layers)
    if weights is None:
        log.warning(f"WARNING: backbone {backbone.name} has RANDOM weights; pass --weights or set DINO_WEIGHTS for meaningful features")
    for key in ("crop", "window"):
        pixels = getattr(config, key)
        if pixels % backbone.patch_size:
            raise UserError(f"{key} {pixels} is not a multiple of {backbone.name}'s patch size {backbone.patch_size}; use {pixels // backbone.patch_size * backbone.patch_size or backbone.patch_size}")
    head_options = dict(config.head_config)
    if config.class_weights:
        head_options["class_weights"] = inverse_sqrt_weights(class_pixel_counts(dataset, "train"))
        log.info("class weights (1/sqrt of training pixel frequency): " + ", ".join(f"{c} {w:.3f}" for c, w in zip(classes, head_options["class_weights"])))
    head = build_head(config.head, backbone.embed_dim, len(backbone.layers), len(classes), **head_options)
    head.to(memory_format=torch.channels_last)  # oneDNN and cuDNN convolutions run faster on NHWC (measured 10-40% on CPU)
    segmenter = Segmenter(backbone, head).to(device := runtime.device)
    if config.init_from:
        warm = run_checkpoint.init_head_from(head, Path(config.init_from).expanduser(), classes=classes)
        log.info(f"warm start from {config.init_from}: kept {len(warm.kept)} tensors, fresh {', '.join(warm.skipped) or 'none'}")
    taxonomy = (dataset.info.get("taxonomy") or {}).get("name", "")

    # Training data: cached features of the fixed view bank, or the views decoded live.
    train_samples: list[Sample] = samples["train"]
    scale_range = (config.scale_range[0], config.scale_range[1])
    if config.cache:
        status["phase"] = "caching features"
        cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else settings.data_root / "cache"
        root = feature_cache.backbone_dir(cache_dir, backbone, runtime.precision)
        banks = [bank_for(s, config.views_per_image, config.crop, scale_range, seed) for s in train_samples]
        entries = [
            feature_cache.cache_entry(root, cache_dir / "labels", image_hash, mask_hash, bank, backbone.layers)
            for (image_hash, mask_hash), bank in zip(file_hashes(train_samples), banks)
        ]
        extract = feature_cache.make_extractor(segmenter.forward_features, runtime)
        jobs = [(s.image_path, s.mask_path, bank) for s, bank in zip(train_samples, banks)]
        cache_started = time.perf_counter()
        missing = feature_cache.missing_entries(entries)
        _barrier(dist_info)  # every process has listed the same missing entries before any is written
        share = missing[dist_info.rank :: dist_info.world_size]
        feature_cache.fill_cache(jobs, entries, extract, config.extract_batch_size, workers, share, dist_info.main)
        _barrier(dist_info)
        cache_seconds = time.perf_counter() - cache_started
        log.info(f"feature cache {root}: {len(entries)} images, {len(missing)} computed in {cache_seconds:.1f} s, {len(entries) - len(missing)} reused")
        train_data: feature_cache.CachedViews | LiveViews = feature_cache.CachedViews(entries, config.views_per_image)
    else:
        train_data = LiveViews(train_samples, config.views_per_image, config.crop, scale_range, seed, config.fresh_views)
    val_samples = samples["val"][: config.max_val_images or None]
    val_images = FullImages(val_samples)
    window_dirs = [feature_cache.window_cache_dir(root, image_hash, config.window, config.window_stride) for image_hash, _ in file_hashes(val_samples)] if config.cache else None

    step_module = TrainStep(segmenter)
    model: nn.Module = step_module
    if dist_info.world_size > 1:
        if device.type == "cuda":  # batch statistics over every GPU's share of the batch (CPUs have no SyncBatchNorm)
            segmenter.head = nn.SyncBatchNorm.convert_sync_batchnorm(segmenter.head)
            head = segmenter.head
        model = nn.parallel.DistributedDataParallel(step_module, device_ids=[device.index] if device.type == "cuda" else None)
    params = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    start_step, best, evals_without_gain = 0, {"miou": -math.inf, "step": 0}, 0
    if state is not None:
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_step, best, evals_without_gain = state["step"], state["best"], state["evals_without_gain"]
        if dist_info.main:
            trim_metrics(run_dir, start_step)
        log.info(f"resumed at step {start_step} (best val mIoU {best['miou']:.4f} at step {best['step']})")

    per_process = len(next(iter(step_batches(len(train_data), config.batch_size, seed, 0, 1, dist_info))))
    if per_process == 0:
        raise UserError(f"batch_size {config.batch_size} is smaller than the {dist_info.world_size} processes; raise it")
    loader = torch.utils.data.DataLoader(
        train_data,
        batch_sampler=_StepBatches(len(train_data), config.batch_size, seed, start_step, config.steps, dist_info),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    batches = iter(loader)
    # The loop's randomness (dropout) restarts from the seed, or from where the interrupted run was:
    # whatever set-up consumed (cache filling, loader seeds) never changes the run.
    torch.manual_seed(seed + 1)
    if state is not None:
        set_rng_state(state["rng"])

    writer = None
    if dist_info.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)
    summary: dict[str, Any] = {
        "run": str(run_dir), "steps": start_step, "best_miou": best["miou"], "best_step": best["step"], "last_miou": None,
        "stopped_early": False, "main": dist_info.main, "cache_seconds": cache_seconds if config.cache else 0.0,
        "train_seconds": 0.0, "validation_seconds": 0.0,
    }

    def evaluate_and_save(step: int, train_loss: float) -> bool:
        """Validate, log, save best/last checkpoints and the training state; True to stop early."""
        nonlocal best, evals_without_gain
        status["phase"] = "validating"
        validation_started = time.perf_counter()
        metrics = validate(segmenter, val_images, classes, config, runtime, dist_info, window_dirs)
        summary["validation_seconds"] += time.perf_counter() - validation_started
        summary["last_miou"] = metrics.miou
        status["phase"] = "training"
        if not dist_info.main:
            return False
        miou = -math.inf if math.isnan(metrics.miou) else metrics.miou
        improved = miou > best["miou"]
        if improved:
            best, evals_without_gain = {"miou": miou, "step": step}, 0
        else:
            evals_without_gain += 1
        per_class = {name: r["iou"] for name, r in zip(classes, metrics.per_class())}
        append_metrics(run_dir, {"step": step, "train_loss": train_loss, "lr": optimizer.param_groups[0]["lr"], **metrics.summary(), "iou": per_class})
        assert writer is not None
        writer.add_scalar("val/miou", metrics.miou, step)
        writer.add_scalar("val/pixel_accuracy", metrics.pixel_accuracy, step)
        for name, iou in per_class.items():
            if iou is not None:
                writer.add_scalar(f"val_iou/{name}", iou, step)
        writer.flush()
        info = {"step": step, "val_miou": metrics.miou, "config": config_dict(config)}
        spec = run_checkpoint.CheckpointSpec.of(backbone, head, classes, dataset.palette, taxonomy, config.window, config.window_stride, info)
        if improved:
            run_checkpoint.save_run_checkpoint(run_dir, head, spec, "best")
        run_checkpoint.save_run_checkpoint(run_dir, head, spec, "last")
        save_state(run_dir, {
            "step": step, "classes": classes, "head": head.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": rng_state(), "best": best, "evals_without_gain": evals_without_gain,
        })
        log.info(f"step {step}: val mIoU {metrics.miou:.4f} (best {best['miou']:.4f} at step {best['step']}), pixel accuracy {metrics.pixel_accuracy:.4f}")
        return bool(config.patience) and evals_without_gain >= config.patience

    # The loop.
    status["phase"] = "training"
    segmenter.train()
    bar = progress_bar(total=config.steps, initial=start_step, desc=f"training {config.head}", unit="step", disable=not dist_info.main, dynamic_ncols=True)
    step, saved_step, started = start_step, start_step, time.perf_counter()
    try:
        while step < config.steps:
            inputs, target = next(batches)
            if config.cache:
                inputs = [x.to(device, non_blocking=True).float().contiguous(memory_format=torch.channels_last) for x in inputs]
            else:
                inputs = inputs.to(device, non_blocking=True)
            target = target.to(device, non_blocking=True)
            with runtime.autocast():
                losses = model(inputs, target)
            losses["loss"].backward()
            reported = torch.stack([v.detach().float() for v in losses.values()])
            if dist_info.world_size > 1:
                dist.all_reduce(reported)
                reported /= dist_info.world_size
            if not torch.isfinite(reported).all():
                kept = f"the last good checkpoint is {run_dir / 'checkpoint_last'} (step {saved_step})" if saved_step else "no checkpoint was saved yet"
                raise NonFiniteLoss(f"the loss became {reported[list(losses).index('loss')].item()} at step {step + 1} and training stopped; {kept}")
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step += 1
            values = dict(zip(losses, reported.tolist()))
            bar.update(1)
            bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{lr:.2e}")
            if writer is not None and (step % config.log_every == 0 or step == config.steps):
                for key, value in values.items():
                    writer.add_scalar(f"train/{key}", value, step)
                writer.add_scalar("train/lr", lr, step)
                log.info(f"step {step}/{config.steps}: loss {values['loss']:.4f}, lr {lr:.2e}, {(time.perf_counter() - started) / (step - start_step):.3f} s/step")
            if step % config.eval_every == 0 or step == config.steps:
                stop = [evaluate_and_save(step, values["loss"])]
                saved_step = step
                if dist_info.world_size > 1:
                    dist.broadcast_object_list(stop, src=0)
                if stop[0]:
                    log.info(f"early stop at step {step}: no better val mIoU in {config.patience} validations")
                    summary["stopped_early"] = True
                    break
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    summary.update(steps=step, best_miou=best["miou"], best_step=best["step"])
    summary["train_seconds"] = time.perf_counter() - started - summary["validation_seconds"]
    return summary
