"""Frozen-backbone features computed once per training view, stored as fp16 memory-mapped arrays.

The frozen part of the backbone never changes during training, so running it on every step wastes
almost all of the time. Each training image's K views go through it once; its outputs are written
as one `.npy` per (image, tensor), read back one view at a time through a memory map, so training
memory does not grow with the number of images. With a frozen backbone the tensors are the maps of
the tapped blocks; with the last N blocks trained (`train_blocks`) they are the maps of the tapped
frozen blocks plus the tokens entering the first trained block (`Backbone.frozen_names`), and the
trained blocks run on them every step.

Layout under the cache folder::

    <backbone>-<weights>-<precision>/<image sha256>-<views hash>/layer_<i>.npy   [K, C, h, w] float16
    <backbone>-<weights>-<precision>/<image sha256>-<views hash>/tokens_<j>.npy  [K, 1 + registers + h*w, C] float16
    labels/<mask sha256>-<views hash>.npy                                          [K, crop, crop] uint8

The folder names hold everything the features depend on (backbone name and spec, weights hash,
compute precision; the image's bytes; the views' parameters), so heads and reruns share entries,
a changed image or view bank invalidates only its own entries, and layers are shared between heads
that read the same ones (linear's last layer is one of segformer's four). Every file is written
atomically, so an interrupted extraction resumes with the entries it has not finished.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from common.fileio import atomic_path
from common.images import read_image
from common.progress import progress as progress_bar
from common.runtime import Runtime
from models.sliding_window import WINDOW_LAYOUT
from prepare.mask_png import read_mask
from train.views import View, apply_view, views_key


@dataclass(frozen=True)
class CacheEntry:
    """Where one image's cached views live: a feature file per layer and the labels file."""

    layer_paths: tuple[Path, ...]
    label_path: Path

    def complete(self) -> bool:
        return self.label_path.is_file() and all(p.is_file() for p in self.layer_paths)


def backbone_fingerprint(backbone: torch.nn.Module) -> str:
    """The backbone's weights hash; for random weights, a hash of the parameters themselves.

    Two random backbones built with different seeds must never share cache entries, so "random"
    alone cannot be a key.
    """
    weights_hash = str(getattr(backbone, "weights_hash", "random"))
    if weights_hash != "random":
        return weights_hash[:16]
    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        if "lora_" in name:  # LoRA adapters (peft) wrap the weights without changing them: the same frozen part
            continue
        name = name.replace(".base_layer.", ".")
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return "random" + digest.hexdigest()[:12]


def backbone_dir(cache_dir: Path, backbone: torch.nn.Module, precision: str) -> Path:
    """The folder of one backbone (name, weights) at one compute precision."""
    return Path(cache_dir) / f"{backbone.name}-{backbone_fingerprint(backbone)}-{precision}"


def feature_file_names(features: Sequence[int | str]) -> list[str]:
    """File names of the cached tensors: a block index `i` is its map `layer_<i>.npy`, a name (`Backbone.frozen_names`,
    e.g. `tokens_10`) is `<name>.npy`."""
    return [f"layer_{f}.npy" if isinstance(f, int) else f"{f}.npy" for f in features]


def cache_entry(
    root: Path,
    labels_root: Path,
    image_hash: str,
    mask_hash: str,
    views: Sequence[View],
    features: Sequence[int | str],
) -> CacheEntry:
    key = views_key(list(views))
    folder = root / f"{image_hash[:24]}-{key}"
    return CacheEntry(
        tuple(folder / name for name in feature_file_names(features)), labels_root / f"{mask_hash[:24]}-{key}.npy"
    )


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)


class _ViewsOfImages(torch.utils.data.Dataset):
    """The K views of each image to extract, decoded in worker processes while the device computes."""

    def __init__(self, jobs: list[tuple[Path, Path, list[View]]]) -> None:
        self.jobs = jobs

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> tuple[int, Tensor, Tensor]:
        image_path, mask_path, views = self.jobs[index]
        image, mask = read_image(image_path), read_mask(mask_path)
        pairs = [apply_view(image, mask, v) for v in views]
        images = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2)
        masks = torch.from_numpy(np.stack([p[1] for p in pairs]))
        return index, images, masks


def missing_entries(entries: Sequence[CacheEntry]) -> list[int]:
    """Indices of the entries still to compute (every process must list them before any process writes)."""
    return [i for i, e in enumerate(entries) if not e.complete()]


def fill_cache(
    samples: Sequence[tuple[Path, Path, list[View]]],
    entries: Sequence[CacheEntry],
    extract: Callable[[Tensor], list[Tensor]],
    batch_size: int,
    workers: int = 0,
    missing: Sequence[int] | None = None,
    progress: bool = True,
) -> int:
    """Compute the `missing` entries (default: all incomplete ones); returns how many it computed.

    `samples[i]` is (image path, mask path, views) for `entries[i]`; `extract` maps a uint8 batch
    `[B,3,crop,crop]` to the backbone's maps as float16 on the CPU (`make_extractor`). Images are
    decoded by `workers` processes while the device runs; views of consecutive images share
    device batches of `batch_size`, and each image's files are written as soon as its views are done.
    """
    missing = missing_entries(entries) if missing is None else list(missing)
    if not missing:
        return 0
    loader = torch.utils.data.DataLoader(
        _ViewsOfImages([samples[i] for i in missing]), batch_size=None, shuffle=False, num_workers=workers
    )
    pending: list[tuple[int, Tensor, Tensor]] = []

    def flush() -> None:
        views = torch.cat([images for _, images, _ in pending])
        chunks = [extract(views[i : i + batch_size]) for i in range(0, len(views), batch_size)]
        maps = [torch.cat(layer) for layer in zip(*chunks)]
        start = 0
        for index, images, masks in pending:
            entry, stop = entries[missing[index]], start + len(images)
            for layer, path in zip(maps, entry.layer_paths):
                if not path.is_file():  # files another entry or an interrupted run already wrote stay as they are
                    _save_npy(path, layer[start:stop].numpy())
            if not entry.label_path.is_file():
                _save_npy(entry.label_path, masks.numpy().astype(np.uint8))
            start = stop
        pending.clear()

    for item in progress_bar(
        loader, total=len(missing), desc="caching features", unit="image", disable=not progress, dynamic_ncols=True
    ):
        pending.append(item)
        if sum(len(images) for _, images, _ in pending) >= batch_size:
            flush()
    if pending:
        flush()
    return len(missing)


def make_extractor(
    frozen_features: Callable[[Tensor], list[Tensor]], runtime: Runtime
) -> Callable[[Tensor], list[Tensor]]:
    """What `fill_cache` calls: uint8 images to float16 CPU tensors via `Segmenter.frozen_features`, on the runtime's device and precision."""

    @torch.no_grad()
    def extract(images: Tensor) -> list[Tensor]:
        images = images.to(runtime.device, non_blocking=True)
        with runtime.autocast():
            return [m.to(torch.float16).cpu() for m in frozen_features(images)]

    return extract


class WindowCache:
    """The maps of one validation image's sliding windows, in the order `predict_logits` asks for them.

    Validation runs the frozen backbone on the same windows every time, so the first validation
    stores their maps (fp16, like the training cache) and later ones only run the head. Maps are
    returned fp16-rounded on the first pass too, so every validation scores the same features.
    """

    def __init__(self, folder: Path, features: Sequence[int | str]) -> None:
        self.paths = [Path(folder) / name for name in feature_file_names(features)]
        self.stored = all(p.is_file() for p in self.paths)
        self.offset = 0
        self.computed: list[list[Tensor]] = []

    def features(self, windows: Tensor, compute: Callable[[Tensor], list[Tensor]]) -> list[Tensor]:
        """Maps of the next `len(windows)` windows: read back, or computed with `compute` and kept for `save`."""
        if self.stored:
            stop = self.offset + len(windows)
            maps = [torch.from_numpy(np.array(np.load(p, mmap_mode="r")[self.offset : stop])) for p in self.paths]
            self.offset = stop
            return [m.to(windows.device).float() for m in maps]
        maps = [m.to(torch.float16) for m in compute(windows)]
        self.computed.append([m.cpu() for m in maps])
        return [m.float() for m in maps]

    def save(self) -> None:
        """Write the maps computed in this pass (nothing when they were read back)."""
        if not self.stored and self.computed:
            for index, path in enumerate(self.paths):
                _save_npy(path, torch.cat([batch[index] for batch in self.computed]).numpy())


def window_cache_dir(root: Path, image_hash: str, crop: int, stride: int) -> Path:
    """Where a val image's window maps live: they depend on its pixels, the crop, the stride and the window layout."""
    return Path(root) / f"val-{image_hash[:24]}-{crop}-{stride}-{WINDOW_LAYOUT}"


def read_view(path: Path, index: int) -> np.ndarray:
    """Entry `index` along the first axis of an `.npy` file, read into a fresh array by one read call.

    A memory map of the file for one view cost more (mapping, page faults, then a copy) than reading
    its bytes: 13 against 9 ms for a batch of 8 views of four 384-channel maps on this CPU.
    """
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        shape, fortran, dtype = (
            np.lib.format.read_array_header_1_0(handle)
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0(handle)
        )
        if fortran or not 0 <= index < shape[0]:
            raise ValueError(f"{path} holds {shape[0]} entries in C order; entry {index} cannot be read")
        view = np.empty(shape[1:], dtype)
        handle.seek(handle.tell() + index * view.nbytes)
        if handle.readinto(view.data) != view.nbytes:
            raise ValueError(f"{path} is shorter than its header says; delete it to have it computed again")
    return view


class CachedViews(torch.utils.data.Dataset):
    """Training samples from the cache: index `(epoch, i)` is view `i % K` of image `i // K`.

    Each access opens the files, reads one view of each and closes them, so the number of open
    files and the memory used stay constant however many images there are.
    """

    def __init__(self, entries: Sequence[CacheEntry], views_per_image: int) -> None:
        self.entries = list(entries)
        self.k = views_per_image

    def __len__(self) -> int:
        return len(self.entries) * self.k

    def __getitem__(self, index: tuple[int, int]) -> tuple[list[Tensor], Tensor]:
        i = index[1]  # (epoch, i): the epoch only matters to live views
        entry, view = self.entries[i // self.k], i % self.k
        maps = [torch.from_numpy(read_view(p, view)) for p in entry.layer_paths]
        label = torch.from_numpy(read_view(entry.label_path, view)).long()
        return maps, label
