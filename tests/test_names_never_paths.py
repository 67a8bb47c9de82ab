"""Every stage run with hostile dataset, run and taxonomy names writes nothing outside DATA_ROOT, MEDIA_DIR and RUNS_DIR.

The folders the tool may write live in `root/work/`; names such as `../../escaped` or an absolute
path would land beside them (or anywhere). A listing of `root` before and after each command,
leaving out the three folders, must not change; each command ends in one UserError sentence.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import fiftyone as fo
import pytest
import torch

from common.cli import UserError
from data_engineering.demo_data import make_demo_export
from data_engineering.import_export import import_command
from evaluate.cli import evaluate
from prepare.cli import prepare
from train.cli import train_command

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::models.backbones.RandomBackboneWarning")


def listing(root: Path, allowed: list[Path]) -> set[str]:
    """Every path under `root`, leaving out the folders the tool may write."""
    found = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) not in allowed]
        found |= {str(Path(folder, name).relative_to(root)) for name in dirs + files}
    return found


@pytest.fixture
def world(tmp_path, monkeypatch, dataset_name):
    root = tmp_path / "root"
    work = root / "work"
    allowed = [work / "data", work / "media", work / "runs"]
    for key, path in zip(("DATA_ROOT", "MEDIA_DIR", "RUNS_DIR"), allowed):
        monkeypatch.setenv(key, str(path))
    work.mkdir(parents=True)
    monkeypatch.chdir(work)  # relative paths resolve here, in the listed root
    export = make_demo_export(root / "inputs" / "export", num_images=4, size=64, colonies=2, seed=3)
    import_command(str(export), dataset_name=dataset_name)
    prepare(dataset_name, taxonomy="agnostic")
    names = [dataset_name]
    yield root, allowed, dataset_name, export, names
    for name in names:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


HOSTILE = ["../../escaped", "../escaped", "a/../../../escaped", "..", "ROOT/abs_escaped", "~/escaped"]


def hostile(name: str, root: Path) -> str:
    return name.replace("ROOT", str(root))


@pytest.mark.parametrize("name", HOSTILE)
def test_import_and_prepare_refuse_hostile_dataset_names(world, name):
    root, allowed, _, export, names = world
    name = hostile(name, root)
    if name != "..":  # FiftyOne itself refuses "..": the others could be made by hand or another tool
        fo.load_dataset(world[2]).clone(name)
        names.append(name)
    before = listing(root, allowed)
    with pytest.raises(UserError, match="dataset.name"):
        import_command(str(export), dataset_name=name)
    with pytest.raises(UserError, match="dataset.name"):
        prepare(name, taxonomy="agnostic")
    assert listing(root, allowed) == before


def test_prepare_refuses_a_taxonomy_file_whose_name_is_a_path(world):
    root, allowed, dataset, _, _ = world
    taxonomy = root / "inputs" / "mine.yaml"
    agnostic = (REPO / "prepare" / "taxonomies" / "agnostic.yaml").read_text()
    taxonomy.write_text(agnostic.replace("name: agnostic", "name: ../../../tax_escaped"))
    before = listing(root, allowed)
    with pytest.raises(UserError, match="taxonomy name"):
        prepare(dataset, taxonomy=str(taxonomy))
    with pytest.raises(UserError, match="taxonomy"):
        prepare(dataset, taxonomy="../../agnostic")
    assert listing(root, allowed) == before


@pytest.mark.parametrize(
    "key, name",
    [
        ("name", "../../escape"),
        ("name", "ROOT/abs_run"),
        ("name", ".."),
        ("dataset", ".."),
        ("dataset", "../../x"),
        ("taxonomy", "../x"),
    ],
)
def test_train_refuses_hostile_run_dataset_and_taxonomy_names(world, key, name):
    root, allowed, dataset, _, _ = world
    before = listing(root, allowed)
    overrides = {
        "backbone": "tiny_dinov2",
        "dataset": dataset,
        "taxonomy": "agnostic",
        "crop": 56,
        "window": 56,
        "views_per_image": 1,
        "batch_size": 2,
        "steps": 1,
        "warmup_steps": 1,
        "eval_every": 1,
        "device": "cpu",
        "workers": 0,
    }
    torch.set_num_threads(1)
    with pytest.raises(UserError, match=f"--{key}"):
        train_command(**(overrides | {key: hostile(name, root)}))
    assert listing(root, allowed) == before


def test_a_name_made_from_the_head_is_checked_too(world):
    root, allowed, dataset, _, _ = world
    before = listing(root, allowed)
    with pytest.raises(UserError, match="run name"):
        train_command(head="../../../head", dataset=dataset, taxonomy="agnostic", device="cpu", workers=0)
    assert listing(root, allowed) == before


@pytest.mark.parametrize("name", ["../../escaped", "ROOT/abs_eval", ".."])
def test_evaluate_refuses_hostile_dataset_names(world, name):
    root, allowed, _, _, _ = world
    before = listing(root, allowed)
    with pytest.raises(UserError, match="dataset.name"):
        evaluate(run=str(root / "work" / "runs" / "some_run"), dataset=hostile(name, root))
    assert listing(root, allowed) == before


def test_a_hostile_name_is_one_line_and_exit_status_2():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "prepare/prepare_data.py", ".."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: dataset name '..' contains '..'") and done.stderr.count("\n") == 1
