"""common.progress: a bar on a terminal, plain lines in a log (no carriage returns, no cursor escapes)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest

from common import progress as progress_module
from common.progress import progress, quiet_foreign_bars, write
from common.settings import REPO_ROOT


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _clean(text: str) -> None:
    assert "\r" not in text and "\x1b" not in text, repr(text[:300])
    assert all(len(line) < 200 for line in text.split("\n"))


def test_in_a_log_a_plain_line_every_ten_percent_with_counts_and_rate():
    log = io.StringIO()
    for _ in progress(range(37), desc="demo images", unit="img", file=log):
        pass
    _clean(log.getvalue())
    lines = log.getvalue().splitlines()
    assert [re.match(r"demo images: (\d+)/37 img \((\d+)%\)", line).group(2) for line in lines] == [
        "11",
        "22",
        "32",
        "41",
        "51",
        "62",
        "70",
        "81",
        "92",
        "100",
    ]
    assert "img/s" in lines[0] and "elapsed" in lines[-1] and lines[-1].startswith("demo images: 37/37 img (100%)")


def test_a_resumed_bar_counts_from_where_it_was_and_shows_its_postfix():
    log = io.StringIO()
    with progress(total=100, initial=40, desc="training linear", unit="step", file=log) as bar:
        for _ in range(60):
            bar.update()
            bar.set_postfix(loss="0.5000")
    lines = log.getvalue().splitlines()
    assert [line.split(":")[1].split()[0] for line in lines] == [
        "50/100",
        "60/100",
        "70/100",
        "80/100",
        "90/100",
        "100/100",
    ]
    assert lines[-1].endswith("loss=0.5000")
    _clean(log.getvalue())


def test_inner_passes_print_only_when_slow_and_messages_keep_their_own_lines(monkeypatch):
    log = io.StringIO()
    with progress(total=4, desc="validating", leave=False, file=log) as bar:
        for _ in range(4):
            bar.update()
    assert log.getvalue() == ""  # a quick pass inside training leaves nothing in the log
    clock = iter(range(0, 1000, 31))
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: float(next(clock)))
    with progress(total=4, desc="validating", leave=False, file=log) as bar:
        bar.update()
        write("step 10 loss 0.3", file=log)
        bar.update()
    lines = log.getvalue().splitlines()
    assert (
        lines[0].startswith("validating: 1/4 it (25%)")
        and lines[1] == "step 10 loss 0.3"
        and lines[2].startswith("validating: 2/4")
    )
    _clean(log.getvalue())


def test_on_a_terminal_it_is_a_tqdm_bar_and_disabled_is_silent():
    screen = Terminal()
    for _ in progress(range(3), desc="x", file=screen):
        pass
    assert "\r" in screen.getvalue() and "3/3" in screen.getvalue()
    quiet = io.StringIO()
    for _ in progress(range(3), file=quiet, disable=True):
        pass
    assert quiet.getvalue() == ""


def test_fiftyone_bars_are_turned_off_outside_a_terminal_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("FIFTYONE_SHOW_PROGRESS_BARS", raising=False)
    quiet_foreign_bars(Terminal())
    assert "FIFTYONE_SHOW_PROGRESS_BARS" not in os.environ
    quiet_foreign_bars(io.StringIO())
    assert os.environ["FIFTYONE_SHOW_PROGRESS_BARS"] == "false"
    monkeypatch.setenv("FIFTYONE_SHOW_PROGRESS_BARS", "true")
    quiet_foreign_bars(io.StringIO())
    assert os.environ["FIFTYONE_SHOW_PROGRESS_BARS"] == "true"


def test_stage_commands_write_readable_logs(tmp_path, dataset_name):
    """make_demo_data and import_cvat_export with their output in a file, FiftyOne's bar setting left to us."""
    env = {k: v for k, v in os.environ.items() if k != "FIFTYONE_SHOW_PROGRESS_BARS"}
    env.update(DATA_ROOT=str(tmp_path / "data"), MEDIA_DIR=str(tmp_path / "media"))
    log_path = tmp_path / "stage.log"
    with open(log_path, "w") as log:
        for command in (
            [
                "data_engineering/make_demo_data.py",
                "--output",
                str(tmp_path / "export"),
                "--num-images",
                "10",
                "--size",
                "64",
            ],
            ["data_engineering/import_cvat_export.py", str(tmp_path / "export"), "--dataset-name", dataset_name],
        ):
            done = subprocess.run(
                [sys.executable, *command], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=300
            )
            assert done.returncode == 0, log_path.read_text()[-2000:]
    text = log_path.read_bytes().decode()  # not read_text: universal newlines would turn each \r into \n
    _clean(text)
    assert "demo images: 10/10 img (100%)" in text and "images: 10/10 img (100%)" in text
    assert len(re.findall(r"^demo images: \d+/10 img", text, re.M)) == 10
    import fiftyone as fo

    fo.delete_dataset(dataset_name)


@pytest.mark.parametrize("stream", [None])
def test_progress_goes_to_stderr_by_default(capsys, stream):
    for _ in progress(range(2), desc="d", file=stream):
        pass
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines()[-1].startswith("d: 2/2 it (100%)")


def test_slow_work_shows_seconds_per_item():
    log = io.StringIO()
    bar = progress(total=2, desc="caching features", unit="image", file=log)
    bar.start_t -= 50  # the first image took 50 s
    bar.update()
    bar.close()
    assert (
        log.getvalue()
        .splitlines()[0]
        .startswith("caching features: 1/2 image (50%), 00:50 elapsed, 50 s/image, ~00:50 left")
    )
