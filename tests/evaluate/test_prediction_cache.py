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


def test_only_headers_stay_in_memory_and_compact_keeps_the_current_lines(tmp_path: Path) -> None:
    """A survey of thousands of photos keeps memory flat: the colonies are read from the file when asked for."""
    rng = np.random.default_rng(3)
    mask = np.kron(rng.integers(0, 3, (8, 8), dtype=np.uint8), np.ones((5, 5), dtype=np.uint8))
    colonies = find_colonies(mask, rng.random(mask.shape, dtype=np.float32))
    png = tmp_path / "a.png"
    png.write_bytes(b"")
    journal = tmp_path / "journal.jsonl"
    PredictionCache(journal, {"window": 518}).add("old", "photo|1|2", png, colonies)  # other settings: a dead line
    cache = PredictionCache(journal, {"window": 392})
    cache.add("a", "photo|1|2", png, colonies, {"x": 0.5})
    cache.add("b", "photo|3|4", png, colonies[:2])
    with open(journal, "a", encoding="utf-8") as handle:
        handle.write('{"sample_id": "torn"')  # an interrupted append
    assert all("colonies" not in entry for entry in cache.entries.values())
    lines = {json.loads(line)["sample_id"]: line for line in journal.read_text().splitlines()[1:3]}
    cache.compact()
    assert journal.read_text().splitlines() == [lines["a"], lines["b"]]
    for again in (cache, PredictionCache(journal, {"window": 392})):
        read = again.get("b", "photo|3|4", png)
        assert read is not None and [c.polygon.wkt for c in read] == [c.polygon.wkt for c in colonies[:2]]
        assert len(again.get("a", "photo|1|2", png) or []) == len(colonies) and again.stats("a") == {"x": 0.5}
        assert again.get("a", "photo|9|9", png) is None and again.get("old", "photo|1|2", png) is None


def test_compact_of_a_journal_never_written(tmp_path: Path) -> None:
    """A run that predicted nothing (every photo unreadable) still compacts: an empty journal, no error."""
    cache = PredictionCache(tmp_path / "journal.jsonl", {"window": 392})
    cache.compact()
    assert (tmp_path / "journal.jsonl").read_text() == "" and cache.entries == {}
