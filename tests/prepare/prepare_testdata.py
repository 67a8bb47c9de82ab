"""Tiny hand-made samples for the prepare tests: images on disk, records and polygons in memory.

Imported by the tests beside it (pytest puts this folder on sys.path).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from prepare.pipeline import Annotation, SampleRecord


def write_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))
    return path


def square(x0: float, y0: float, x1: float, y1: float, label: str, z_order: int = 0) -> Annotation:
    """A rectangle given in normalized coordinates."""
    return Annotation(label, (np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=float),), z_order)


class Source:
    """An in-memory stand-in for the FiftyOne source: records plus a polygon reader that counts its reads."""

    def __init__(self, folder: Path, n: int = 6, width: int = 40, height: int = 30):
        self.folder = folder
        self.records: list[SampleRecord] = []
        self.annotations: dict[str, list[Annotation]] = {}
        splits = ["train", "train", "val", "test", "train", "val"]
        for i in range(n):
            path = write_image(folder / "media" / f"img_{i}.jpg", width, height, seed=i)
            annotations = [
                square(0.1, 0.1, 0.6, 0.6, "Acropora"),
                square(0.3, 0.3, 0.5, 0.5, "Pavona" if i % 2 else "Porites"),
            ]
            self.add(
                SampleRecord(f"id{i}", str(path), width, height, (splits[i % len(splits)],), ("A", f"q{i}")),
                annotations,
            )

    def add(self, record: SampleRecord, annotations: list[Annotation]) -> None:
        self.records = [r for r in self.records if r.sample_id != record.sample_id] + [record]
        self.annotations[record.sample_id] = annotations
        self.records = [
            SampleRecord(
                r.sample_id,
                r.filepath,
                r.width,
                r.height,
                r.tags,
                r.group,
                tuple(a.label for a in self.annotations[r.sample_id]),
            )
            for r in self.records
        ]

    def read(self, sample_ids):
        for sample_id in sample_ids:
            yield sample_id, self.annotations[sample_id]
