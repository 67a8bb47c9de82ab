"""common.names: a dataset, run or taxonomy name is never a path."""

from __future__ import annotations

import pytest

from common.cli import UserError
from common.names import check_file_name, check_name


@pytest.mark.parametrize(
    "name", ["reef_demo", "Moorea 2021", "linear_reef_demo_finegrained", "Moorea-2020.v2", "2021", "Récif (nord)"]
)
def test_plain_names_pass(name):
    assert check_name(name, "dataset name") == name


def test_a_number_is_taken_as_its_digits():
    assert check_name(2021, "--dataset-name") == "2021"


@pytest.mark.parametrize(
    "name, problem",
    [
        ("../../x", "is a path"),
        ("..", "contains '..'"),
        ("a..b", "contains '..'"),
        ("/tmp/x", "is a path"),
        ("a\\b", "is a path"),
        ("~/x", "is a path"),
        ("", "is empty"),
        (".hidden", "cannot safely hold"),
        (" x", "cannot safely hold"),
        ("x ", "cannot safely hold"),
        ("a\0b", "cannot safely hold"),
        ("a\nb", "cannot safely hold"),
        ("x" * 101, "101 characters"),
        (None, "must be text"),
        (["a"], "must be text"),
    ],
)
def test_names_that_could_be_paths_are_refused_in_one_sentence(name, problem):
    with pytest.raises(UserError) as error:
        check_name(name, "--name", "pass a plain name")
    message = str(error.value)
    assert (
        message.startswith(f"--name {name!r} ")
        and problem in message
        and message.endswith("; pass a plain name")
        and "\n" not in message
    )


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "a\\b", "a\0b", "é" * 128])
def test_file_names_from_servers_are_never_paths(name):
    with pytest.raises(UserError):
        check_file_name(name, "image file name")


def test_file_names_may_hold_what_cameras_write():
    assert check_file_name("IMG 0001 (copy).JPG", "image file name") == "IMG 0001 (copy).JPG"
