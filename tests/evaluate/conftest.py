"""The evaluate tests share one tiny evaluated world (see evaluate_world.py), built once, and a dataset with a class all missed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from evaluate_world import World, build_world
from missed_class import astreopora_missed_dataset


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("evaluate_world"))


@pytest.fixture
def astreopora_missed(tmp_path: Path) -> Iterator[tuple[Any, ...]]:
    """missed_class.astreopora_missed_dataset, deleted after the test."""
    dataset, ids, fields, expected = astreopora_missed_dataset(tmp_path)
    yield dataset, ids, fields, expected
    dataset.delete()
