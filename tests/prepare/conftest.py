"""Fixtures for the prepare tests."""

from __future__ import annotations

import pytest
from prepare_testdata import Source

from prepare.pipeline import PrepareOptions
from prepare.taxonomy import load_taxonomy


@pytest.fixture
def source(tmp_path) -> Source:
    return Source(tmp_path)


@pytest.fixture
def options(tmp_path) -> PrepareOptions:
    return PrepareOptions(
        taxonomy=load_taxonomy("finegrained"), output_dir=tmp_path / "out", source={"dataset": "reef"}
    )
