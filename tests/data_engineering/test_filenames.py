"""Site/year/quadrat from file names, splits from CVAT subsets, media paths that never escape."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.cli import UserError
from data_engineering.filenames import (
    QuadratName,
    check_relative_name,
    media_path,
    parse_quadrat_name,
    parse_split_mapping,
    split_from_subset,
)


def test_default_pattern_reads_site_year_quadrat():
    assert parse_quadrat_name("Moorea_2021_03.jpg") == QuadratName("Moorea", 2021, "03")
    assert parse_quadrat_name("images/Tiahura_Nord_2019_Q12.JPG") == QuadratName("Tiahura_Nord", 2019, "Q12")


def test_non_matching_name_leaves_fields_empty():
    assert parse_quadrat_name("IMG_0001.jpg") == QuadratName()
    assert parse_quadrat_name("Moorea_21_03.jpg") == QuadratName()


def test_custom_pattern():
    assert parse_quadrat_name("2020-Q7-Rangiroa.png", "{year}-Q{quadrat}-{site}") == QuadratName("Rangiroa", 2020, "7")
    assert parse_quadrat_name("T3_Moorea_2020_05.jpg", "{transect}_{site}_{year}_{quadrat}") == QuadratName(
        "Moorea", 2020, "05"
    )
    with pytest.raises(UserError):
        parse_quadrat_name("a_b.jpg", "{site}_{site}")


def test_split_mapping_default_and_configured():
    assert [split_from_subset(s) for s in ("train", "Training", "VAL", "validation", "test", "", None, "extra")] == [
        "train",
        "train",
        "val",
        "val",
        "test",
        None,
        None,
        None,
    ]
    mapping = parse_split_mapping("dev=val, holdout=test")
    assert split_from_subset("Dev", mapping) == "val" and split_from_subset("train", mapping) is None
    with pytest.raises(UserError):
        parse_split_mapping("dev=validation_set")
    with pytest.raises(UserError):
        parse_split_mapping("dev")


def test_media_path_keeps_tasks_apart():
    root = Path("/m")
    assert media_path(root, "Reef/2021", 4, "sub/a.jpg") == Path("/m/Reef_2021/task_4/sub/a.jpg")
    assert media_path(root, "P", 4, "a.jpg") != media_path(root, "P", 5, "a.jpg")


@pytest.mark.parametrize("name", ["../a.jpg", "sub/../../a.jpg", "/etc/passwd", "C:\\x.jpg", "..\\a.jpg", ""])
def test_names_that_would_escape_are_refused(name):
    with pytest.raises(UserError, match="outside the media folder"):
        check_relative_name(name)
