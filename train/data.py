"""The prepared folder as training samples: checked once up front, then read as views or full images.

Every problem a user can fix (a missing file, a mask whose size differs from its image, an empty
split) is found before any compute is spent, and reported in one sentence naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from common.cli import UserError
from common.fileio import sha256_file
from common.images import read_image
from prepare.layout import PreparedDataset, load_prepared
from prepare.mask_png import read_mask
from train.views import View, apply_view, view_bank

__all__ = ["Sample", "read_image", "read_mask", "load_samples", "LiveViews", "FullImages"]


@dataclass(frozen=True)
class Sample:
    """One image of a split with its mask; hashes are of the files' bytes (the cache key)."""

    name: str
    image_path: Path
    mask_path: Path
    height: int
    width: int


def _size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    with Image.open(path) as image:
        return image.height, image.width


def load_samples(
    folder: str | Path, splits: tuple[str, ...] = ("train", "val")
) -> tuple[PreparedDataset, dict[str, list[Sample]]]:
    """The prepared folder and its samples per split, every file checked to exist and masks to fit."""
    dataset = load_prepared(folder)
    out: dict[str, list[Sample]] = {}
    for split in splits:
        samples = []
        for entry in dataset.split(split):
            image_path, mask_path = dataset.image_path(entry), dataset.mask_path(entry)
            if not image_path.is_file():
                raise UserError(
                    f"{image_path} is listed in {dataset.root / 'manifest.jsonl'} but missing; rerun prepare/prepare_data.py"
                )
            dataset.check_mask(
                entry
            )  # empty, unreadable, another size, values outside the classes: refused before any work
            image_size, mask_size = _size(image_path), _size(mask_path)
            if image_size != mask_size:
                raise UserError(
                    f"mask {mask_path} is {mask_size[1]}x{mask_size[0]} but its image is {image_size[1]}x{image_size[0]}; rerun prepare/prepare_data.py"
                )
            samples.append(Sample(Path(entry.image).stem, image_path, mask_path, image_size[0], image_size[1]))
        if not samples:
            raise UserError(
                f"{dataset.root} has no {split} images; prepare it with a {split} split (see --split-policy)"
            )
        out[split] = samples
    return dataset, out


def file_hashes(samples: list[Sample]) -> list[tuple[str, str]]:
    """(image sha256, mask sha256) per sample: the cache key of what the pixels are."""
    return [(sha256_file(s.image_path), sha256_file(s.mask_path)) for s in samples]


def class_pixel_counts(dataset: PreparedDataset, split: str) -> np.ndarray:
    """Labelled pixels per class in a split, from the manifest (no mask is read)."""
    counts = np.zeros(dataset.num_classes, dtype=np.int64)
    for entry in dataset.split(split):
        for index, count in entry.pixels.items():
            if int(index) < dataset.num_classes:  # the ignore index is counted there too
                counts[int(index)] += count
    return counts


def inverse_sqrt_weights(counts: np.ndarray) -> list[float]:
    """Loss weights proportional to 1/sqrt(frequency), mean 1 over the classes present; absent classes get 0."""
    present = counts > 0
    weights = np.zeros(len(counts))
    weights[present] = 1.0 / np.sqrt(counts[present] / counts[present].sum())
    weights[present] /= weights[present].mean()
    return weights.tolist()


def bank_for(sample: Sample, k: int, crop: int, scale_range: tuple[float, float], seed: int) -> list[View]:
    return view_bank(sample.name, sample.height, sample.width, k, crop, scale_range, seed)


class LiveViews(torch.utils.data.Dataset):
    """Training views decoded from the image files (the `--no-cache` path).

    Index `(epoch, i)` is view `i % K` of image `i // K`: the fixed bank, or with `fresh` a new bank
    drawn for every epoch (augmentation the cache cannot hold).
    """

    def __init__(
        self, samples: list[Sample], k: int, crop: int, scale_range: tuple[float, float], seed: int, fresh: bool = False
    ) -> None:
        self.samples, self.k, self.crop, self.scale_range, self.seed, self.fresh = (
            samples,
            k,
            crop,
            scale_range,
            seed,
            fresh,
        )

    def __len__(self) -> int:
        return len(self.samples) * self.k

    def __getitem__(self, index: tuple[int, int]) -> tuple[Tensor, Tensor]:
        epoch, i = index
        sample = self.samples[i // self.k]
        seed = self.seed + 1_000_003 * (epoch + 1) if self.fresh else self.seed
        view = bank_for(sample, self.k, self.crop, self.scale_range, seed)[i % self.k]
        image, mask = apply_view(read_image(sample.image_path), read_mask(sample.mask_path), view)
        return torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(mask).long()


class FullImages(torch.utils.data.Dataset):
    """Whole validation images and masks, for sliding-window evaluation."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        sample = self.samples[index]
        image = torch.from_numpy(read_image(sample.image_path)).permute(2, 0, 1)
        return image, torch.from_numpy(read_mask(sample.mask_path).copy()).long()
