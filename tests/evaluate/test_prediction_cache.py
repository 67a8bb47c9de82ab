"""The prediction journal: a line per photo whose colonies read back exactly as they were found."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evaluate.colonies import find_colonies
from evaluate.prediction_cache import PredictionCache


def test_journal_lines_hold_each_outline_and_read_back_the_same_colonies(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    mask = np.kron(rng.integers(0, 4, (15, 20), dtype=np.uint8), np.ones((6, 6), dtype=np.uint8))
    mask[rng.random(mask.shape) < 0.03] = 1
    colonies = find_colonies(mask, rng.random(mask.shape, dtype=np.float32))
    assert len(colonies) > 20
    png = tmp_path / "masks" / "a.png"
    png.parent.mkdir()
    png.write_bytes(b"")
    PredictionCache(tmp_path / "journal.jsonl", {"window": 392}).add("a", "photo|1|2", png, colonies, {"x": 0.5})
    line = (tmp_path / "journal.jsonl").read_text()
    former = [
        {"class": c.class_index, "outline": [list(p) for p in c.polygon.exterior.coords], "confidence": c.confidence, "area": c.area}
        for c in colonies
    ]  # fmt: skip
    assert json.loads(line)["colonies"] == former and json.dumps(former, separators=(",", ":")) in line
    again = PredictionCache(tmp_path / "journal.jsonl", {"window": 392}).get("a", "photo|1|2", png)
    assert again is not None and len(again) == len(colonies)
    for read, found in zip(again, colonies):
        assert read.polygon.equals_exact(found.polygon, 0) and list(read.polygon.exterior.coords) == list(
            found.polygon.exterior.coords
        )
        assert (read.class_index, read.confidence, read.area) == (found.class_index, found.confidence, found.area)
    assert PredictionCache(tmp_path / "journal.jsonl", {"window": 518}).get("a", "photo|1|2", png) is None
