"""common.cli: every command's arguments are checked against its signature before any work starts."""

from __future__ import annotations

import functools
import importlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from common import cli
from common.cli import UserError, parse_args, run, spec_from_function, spec_from_source
from common.settings import REPO_ROOT


def sample(
    run: str,
    dataset: str | None = None,
    split: str = "val",
    crop: int | None = None,
    lr: float = 1e-3,
    ratios: Sequence[float] = (0.7, 0.2, 0.1),
    delete: bool = False,
    head: str = "linear",
) -> None:
    """A command like ours.

    Args:
        run: the run folder.
        dataset: the dataset, a long help
            that goes on.
        split: val or test.
        crop: window in pixels.
        lr: learning rate.
        ratios: fractions.
        delete: remove instead.
        head: which head.
    """


SPEC = spec_from_function(sample)


def parse(*argv: str) -> dict:
    return parse_args(SPEC, list(argv))


def test_values_are_converted_from_the_annotations():
    assert parse("runs/a", "--crop", "392", "--lr=0.5", "--ratios", "0.8,0.1,0.1", "--dataset", "2021") == {
        "run": "runs/a",
        "crop": 392,
        "lr": 0.5,
        "ratios": [0.8, 0.1, 0.1],
        "dataset": "2021",
    }
    assert parse("--run", "x", "--ratios=[0.5, 0.5]", "--crop=-14")["ratios"] == [0.5, 0.5]
    assert parse("--run", "Reef, 2021")["run"] == "Reef, 2021"  # text stays text (fire made a tuple of it)


@pytest.mark.parametrize(
    "argv, delete",
    [
        (["--delete"], True),
        (["--delete=false"], False),
        (["--delete=False"], False),
        (["--delete", "no"], False),
        (["--delete=1"], True),
        (["--delete", "yes"], True),
        (["--no-delete"], False),
        (["--nodelete"], False),
        (["--no_delete", "false"], True),
        ([], None),
    ],
)
def test_booleans_only_from_words_that_mean_yes_or_no(argv, delete):
    assert parse("x", *argv).get("delete") is delete


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--delete=maybe"], "--delete is a yes/no flag: give true or false (or yes/no, 1/0), not 'maybe'"),
        (["--delete=ture"], "not 'ture'"),
        (["--splt", "test"], "unknown flag --splt; did you mean --split?"),
        (["--split_policy", "x"], "unknown flag --split_policy; did you mean --split?"),
        (["--spl", "test"], "unknown flag --spl"),  # no abbreviations: they change meaning when a flag is added
        (["-h2"], "is not a flag here"),
        (["-r", "x"], "only -h has a one-letter form"),
        (["--crop", "39.2"], "--crop expects a whole number, not '39.2'"),
        (["--lr", "nan"], "--lr expects a finite number, not 'nan'"),
        (["--lr", "fast"], "--lr expects a finite number"),
        (["--ratios", "0.7,x"], "--ratios expects finite numbers separated by commas"),
        (["--crop"], "--crop needs a value, e.g. --crop N"),
        (["--crop", "--split", "val"], "--crop needs a value"),
        (["--split", "val", "--split=test"], "--split is given twice"),
        (["--no-split"], "unknown flag --no-split"),
        (["a", "b", "c", "d", "e", "f", "g", "h", "i"], "unexpected argument 'i'"),
    ],
)
def test_slips_are_refused_with_one_sentence(argv, message):
    with pytest.raises(UserError) as error:
        parse("x", *argv) if argv[:1] != ["a"] else parse(*argv)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_missing_required_argument_names_the_flag_and_its_help():
    with pytest.raises(UserError, match=r"--run is required: the run folder\."):
        parse("--split", "val")


def test_dashes_and_underscores_and_negative_numbers():
    assert parse("x", "--crop", "-1")["crop"] == -1
    assert parse("--run", "x", "--split", "-")["split"] == "-"
    assert parse("--", "--not-a-flag")["run"] == "--not-a-flag"


def test_help_is_printed_wherever_h_appears_and_never_binds_to_a_parameter(monkeypatch, capsys):
    called = []
    for argv in (["-h"], ["--help"], ["runs/a", "--split", "val", "-h"], ["--head", "x", "--help"]):
        run(functools.wraps(sample)(lambda **kw: called.append(kw)), argv=argv)
        out = capsys.readouterr().out
        assert out.startswith("usage: ") and "--head HEAD  (default: linear)" in out
        assert "--delete, --no-delete  (default: false)" in out and "the dataset, a long help that goes on." in out
    assert called == []
    run(functools.wraps(sample)(lambda **kw: called.append(kw)), argv=["runs/a", "--delete=false"])
    assert called == [{"run": "runs/a", "delete": False}]


def test_run_turns_a_slip_into_one_line_and_status_2_before_calling(monkeypatch, capsys):
    called = []
    with pytest.raises(SystemExit) as exit_info:
        run(functools.wraps(sample)(lambda **kw: called.append(kw)), argv=["x", "--splt", "test"])
    assert exit_info.value.code == 2 and called == []
    assert capsys.readouterr().err.splitlines() == [
        "error: unknown flag --splt; did you mean --split? (--help lists every flag)"
    ]


def test_kwargs_commands_take_only_the_flags_they_name(capsys):
    seen = {}

    def command(config: str | None = None, **overrides) -> None:
        seen.update(config=config, **overrides)

    run(command, extra={"cache": "bool", "steps": "Any"}, argv=["my.yaml", "--no-cache", "--steps", "5"])
    assert seen == {"config": "my.yaml", "cache": False, "steps": "5"}
    with pytest.raises(SystemExit):
        run(command, extra={"cache": "bool", "steps": "Any"}, argv=["--stepz", "5"])
    assert "did you mean --steps?" in capsys.readouterr().err


def test_subcommands(capsys):
    seen = []
    run({"measure": functools.wraps(sample)(lambda **kw: seen.append(kw))}, argv=["measure", "r", "--crop", "14"])
    assert seen == [{"run": "r", "crop": 14}]


# --- every command of the project --------------------------------------------------------------------------------

# script, the module and function behind it, a yes/no flag it has (None: it has none), the required arguments
COMMANDS = [
    ("demo.py", "demo", "demo", None, []),
    ("data_engineering/make_demo_data.py", "data_engineering.demo_data", "make_demo_data", None, []),
    (
        "data_engineering/import_cvat_export.py",
        "data_engineering.import_export",
        "import_command",
        "overwrite",
        ["export.zip"],
    ),
    ("data_engineering/pull_from_cvat.py", "data_engineering.pull", "pull_from_cvat", "refresh", ["Reef 2021"]),
    ("prepare/prepare_data.py", "prepare.cli", "prepare", "write_tags", ["reef"]),
    ("train/train.py", "train.cli", "train_command", "resume", []),
    ("evaluate/evaluate.py", "evaluate.cli", "evaluate", "delete", ["--run", "runs/x"]),
    ("evaluate/app.py", "evaluate.cli", "app", None, []),
    ("evaluate/predict.py", "evaluate.cli", "predict", "tta", ["--run", "runs/x", "--dataset", "d"]),
    ("evaluate/score_points.py", "evaluate.cli", "score_points", None, ["--run", "runs/x", "--dataset", "d"]),
    (
        "data_engineering/import_images.py",
        "data_engineering.local_images",
        "import_images_command",
        "overwrite",
        ["photos", "--dataset-name", "d"],
    ),
    (
        "data_engineering/import_points.py",
        "data_engineering.coralnet_points",
        "import_points_command",
        None,
        ["points.csv", "--dataset-name", "d"],
    ),
    ("evaluate/push_to_cvat.py", "evaluate.cli", "push_to_cvat", "dry_run", ["--run", "runs/x", "--task-id", "3"]),
    ("benchmarks/bench_prepare.py", "benchmarks.bench_prepare", "benchmark", "keep", []),
]
IDS = [c[0] for c in COMMANDS]
HEAVY = ("torch", "fiftyone", "cvat_sdk")


def _command(tmp_path: Path, script: str, *argv: str) -> subprocess.CompletedProcess:
    """The script run as a user runs it, with `-X importtime` telling which modules it imported."""
    env = {
        **os.environ,
        "DATA_ROOT": str(tmp_path / "data"),
        "MEDIA_DIR": str(tmp_path / "media"),
        "RUNS_DIR": str(tmp_path / "runs"),
    }
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, "-X", "importtime", script, *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _imported(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def _messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("import time:")]


@pytest.mark.parametrize("script, module, function, flag, required", COMMANDS, ids=IDS)
@pytest.mark.parametrize("help_flag", ["-h", "--help"])
def test_help_prints_usage_at_once_and_does_nothing_else(tmp_path, script, module, function, flag, required, help_flag):
    done = _command(tmp_path, script, help_flag)
    assert done.returncode == 0 and done.stdout.startswith("usage: python "), done.stdout + done.stderr
    assert not _messages(done.stderr) and not list(tmp_path.iterdir())
    assert not _imported(done.stderr) & set(
        HEAVY
    )  # no torch, FiftyOne or CVAT SDK: help answers in well under a second
    flags = [w for w in done.stdout.replace(cli.CONVENTIONS, "").split() if w.startswith("--")]
    assert flags and not [f for f in flags if "_" in f], "flags are spelt with dashes"


@pytest.mark.parametrize("script, module, function, flag, required", COMMANDS, ids=IDS)
def test_a_misspelt_flag_stops_before_any_work(tmp_path, script, module, function, flag, required):
    done = _command(tmp_path, script, *required, "--splt", "test")
    assert done.returncode == 2, done.stdout + done.stderr
    assert _messages(done.stderr) == [done.stderr.splitlines()[-1]] and _messages(done.stderr)[0].startswith(
        "error: unknown flag --splt"
    )
    assert "Traceback" not in done.stderr and not done.stdout and not list(tmp_path.iterdir())
    assert not _imported(done.stderr) & set(HEAVY)


@pytest.mark.parametrize(
    "script, module, function, flag, required", [c for c in COMMANDS if c[3]], ids=[c[0] for c in COMMANDS if c[3]]
)
def test_a_yes_no_flag_takes_only_yes_or_no(tmp_path, monkeypatch, script, module, function, flag, required):
    done = _command(tmp_path, script, *required, f"--{flag.replace('_', '-')}=maybe")
    assert done.returncode == 2 and _messages(done.stderr) == [
        f"error: --{flag.replace('_', '-')} is a yes/no flag: give true or false (or yes/no, 1/0), not 'maybe'"
    ], done.stderr[-2000:]
    assert not list(tmp_path.iterdir())
    # in-process, through the command's own entry point: `--flag=false` arrives as False
    target = importlib.import_module(module)
    seen = {}
    monkeypatch.setattr(target, function, functools.wraps(getattr(target, function))(lambda *a, **kw: seen.update(kw)))
    monkeypatch.setattr(sys, "argv", [script, *required, f"--{flag.replace('_', '-')}=false"])
    main = {"evaluate": "evaluate_main", "app": "app_main", "push_to_cvat": "push_main", "predict": "predict_main"}.get(
        function, "main"
    )
    getattr(target, main)()
    assert seen[flag] is False


@pytest.mark.parametrize(
    "script, module, function, flag, required",
    [c for c in COMMANDS if c[1] != "train.cli"],
    ids=[c[0] for c in COMMANDS if c[1] != "train.cli"],
)
def test_help_read_from_the_source_matches_the_function(script, module, function, flag, required):
    """Scripts answer --help from their command's source (no import); it must say what the function takes."""
    from_source = spec_from_source(module, function)
    from_function = spec_from_function(getattr(importlib.import_module(module), function))
    for a, b in zip(from_source.params, from_function.params, strict=True):
        assert (a.name, a.annotation, a.required, a.positional, a.help) == (
            b.name,
            b.annotation,
            b.required,
            b.positional,
            b.help,
        )
        assert a.default in (None, b.default), a.name
    assert from_source.summary == from_function.summary


def test_prechecked_scripts_name_their_command():
    """Each script that checks its flags before importing its stage names the function its main() runs."""
    for script, module, function, _, _ in COMMANDS:
        text = (REPO_ROOT / script).read_text()
        if "precheck(" in text:
            assert f'precheck("{module}", "{function}")' in text, script


def test_train_flags_are_checked_before_work(monkeypatch, capsys):
    from train import cli as train_cli

    called = []
    monkeypatch.setattr(train_cli, "load_config", lambda *a, **kw: called.append(kw))
    for argv, message in (
        (["--cache=maybe"], "--cache is a yes/no flag: give true or false (or yes/no, 1/0), not 'maybe'"),
        (["--stepz", "3"], "unknown flag --stepz; did you mean --steps? (--help lists every flag)"),
        (["-s", "3"], "-s is not a flag here"),
    ):
        monkeypatch.setattr(sys, "argv", ["train.py", *argv])
        with pytest.raises(SystemExit) as exit_info:
            train_cli.main()
        assert exit_info.value.code == 2 and called == []
        assert capsys.readouterr().err.splitlines()[0].startswith(f"error: {message}")
