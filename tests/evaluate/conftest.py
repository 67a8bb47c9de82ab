"""The evaluate tests share one tiny evaluated world (see evaluate_world.py), built once."""

from __future__ import annotations

import pytest
from evaluate_world import World, build_world


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("evaluate_world"))
