"""A predicted photo's CPU work after the model: its mask PNG, its colonies and its journal line.

Kept apart from `evaluate.survey` (no torch, no FiftyOne) because it runs beside the model: on one thread on a
CPU, where torch has every core, and in worker processes beside a GPU, where the cores are free and one worker
would finish one fragmented 1920² photo at a time (0.2–0.5 s, more than the model's 0.2 s aimed at there; the
processes were chosen while GDAL's polygonize held the GIL, which `evaluate.tracing` no longer needs). The
journal line is made here and appended by the predicting process, which alone writes its journal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.fileio import write_bytes_atomic
from evaluate.colonies import Colony, find_colonies
from evaluate.prediction_cache import journal_line
from prepare.mask_png import encode_mask_png

PNG, COLONIES, JOURNAL_LINE = "mask PNG", "colonies", "doubt and journal"


@dataclass(frozen=True)
class Finished:
    """What the journal gets for one photo (`PredictionCache.append`), and the seconds each part took."""

    header: dict[str, Any]
    line: bytes
    seconds: dict[str, float]


def finish_photo(
    journal_key: str,
    sample_id: str,
    image: str,
    mask: np.ndarray,
    confidence: np.ndarray,
    stats: dict[str, float],
    path: Path,
    mask_palette: bytes,
) -> Finished:
    """Write the mask PNG to `path`, trace the colonies, and make the journal line (not appended: see the module)."""
    colonies, seconds = write_mask_and_trace(mask, confidence, path, mask_palette)
    start = time.perf_counter()
    header, line = journal_line(journal_key, sample_id, image, path.name, colonies, stats)
    seconds[JOURNAL_LINE] = time.perf_counter() - start
    return Finished(header, line, seconds)


def write_mask_and_trace(
    mask: np.ndarray, confidence: np.ndarray, path: Path, mask_palette: bytes
) -> tuple[list[Colony], dict[str, float]]:
    """Write the mask PNG to `path` and trace its colonies, as predict and evaluate both do after the model:
    (the colonies, the seconds each part took)."""
    start = time.perf_counter()
    write_bytes_atomic(path, encode_mask_png(mask, mask_palette))
    png, start = time.perf_counter() - start, time.perf_counter()
    colonies = find_colonies(mask, confidence)
    return colonies, {PNG: png, COLONIES: time.perf_counter() - start}
