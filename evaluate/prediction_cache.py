"""Predictions already made, so an interrupted or repeated evaluation resumes instead of starting over.

Prediction is nearly all of an evaluation's time. Each finished image appends one JSON line: its
sample, what the prediction depended on (checkpoint tensors, crop, stride, TTA, precision, device
type, the image file's size and modification time) and its colonies; the mask itself is the
palette PNG beside it. A line is reused only when all of that is unchanged and the PNG exists.
A torn last line (an interrupted append) is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import shapely
from shapely.geometry import Polygon

from common.fileio import atomic_path
from evaluate.colonies import Colony, outline_polygons

CACHE_FILE = "predictions.jsonl"


def image_key(filepath: str | Path) -> str:
    """The image file as far as its prediction is concerned: path, size and modification time."""
    stat = os.stat(filepath)
    return f"{Path(filepath).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def settings_key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def polygon_outlines(polygons: list[Polygon]) -> list[list[list[float]]]:
    """Each polygon's exterior ring as [[x, y], ...] (closing point included), in one pass over all of them."""
    if not polygons:
        return []
    rings = shapely.get_exterior_ring(polygons)
    coords = shapely.get_coordinates(rings)
    return [ring.tolist() for ring in np.split(coords, np.cumsum(shapely.get_num_coordinates(rings))[:-1])]


def journal_line(
    key: str, sample_id: str, image: str, mask_name: str, colonies: list[Colony], stats: dict[str, float] | None
) -> tuple[dict[str, Any], bytes]:
    """A photo's journal line, and its header (the line without its colonies): pure, so another process can make it."""
    header = {"sample_id": sample_id, "settings": key, "image": image, "mask": mask_name, "stats": stats or {}}
    entry = header | {
        "colonies": [
            {"class": c.class_index, "outline": outline, "confidence": c.confidence, "area": c.area}
            for c, outline in zip(colonies, polygon_outlines([c.polygon for c in colonies]))
        ]
    }
    return header, (json.dumps(entry, separators=(",", ":")) + "\n").encode("utf-8")


class PredictionCache:
    """`get` a sample's earlier colonies (None when it must be predicted again); `add` a finished one.

    Only each line's header (sample, image, mask, stats) and its place in the file stay in memory; the colonies
    are read from the file when asked for, so a survey of thousands of photos keeps memory flat.
    """

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = path
        self.key = settings_key(settings)
        self.entries: dict[str, dict[str, Any]] = {}  # sample id -> header, with "_at" (offset, length) in the file
        if path.is_file():
            offset = 0
            with open(path, "rb") as handle:
                for line in handle:
                    self._index(line, offset)
                    offset += len(line)

    def _index(self, line: bytes, offset: int) -> None:
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return  # a torn line (an interrupted append)
        if isinstance(entry, dict) and entry.get("settings") == self.key:
            self._remember(entry, offset, len(line))

    def _remember(self, entry: dict[str, Any], offset: int, length: int) -> None:
        """Keep a line's header and its place in the file; its colonies are read back when asked for."""
        self.entries[entry["sample_id"]] = {k: v for k, v in entry.items() if k != "colonies"} | {
            "_at": (offset, length)
        }

    def _line(self, entry: dict[str, Any], handle: BinaryIO | None = None) -> bytes:
        """A line's bytes, read from `handle` when one is open on the file."""
        offset, length = entry["_at"]
        if handle is None:
            with open(self.path, "rb") as own:
                return self._line(entry, own)
        handle.seek(offset)
        return handle.read(length)

    def get(self, sample_id: str, image: str, mask_path: Path) -> list[Colony] | None:
        entry = self.entries.get(sample_id)
        if entry is None or entry["image"] != image or entry["mask"] != mask_path.name or not mask_path.is_file():
            return None
        colonies = json.loads(self._line(entry))["colonies"]
        return [
            Colony(c["class"], polygon, c["confidence"], c["area"])
            for c, polygon in zip(colonies, outline_polygons([c["outline"] for c in colonies]))
        ]

    def stats(self, sample_id: str) -> dict[str, float]:
        """The per-image figures stored with a sample's prediction (empty when there are none)."""
        return dict(self.entries.get(sample_id, {}).get("stats") or {})

    def add(
        self, sample_id: str, image: str, mask_path: Path, colonies: list[Colony], stats: dict[str, float] | None = None
    ) -> None:
        self.append(*journal_line(self.key, sample_id, image, mask_path.name, colonies, stats))

    def append(self, header: dict[str, Any], line: bytes) -> None:
        """Append a line `journal_line` made (with this journal's key), flushed to disk before it is remembered."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as handle:
            offset = handle.seek(0, os.SEEK_END)
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self._remember(header, offset, len(line))

    def compact(self) -> None:
        """Rewrite the file with the current settings' lines only (earlier settings' lines are dead), line by line."""
        kept = list(self.entries.values())
        with atomic_path(self.path) as tmp, open(tmp, "wb") as out:
            if kept:  # a journal with no line may not exist yet
                with open(self.path, "rb") as journal:
                    for entry in kept:
                        out.write(self._line(entry, journal))
            out.flush()
            os.fsync(out.fileno())
        self.entries, offset = {}, 0
        for entry in kept:
            self._remember(entry, offset, entry["_at"][1])
            offset += entry["_at"][1]
