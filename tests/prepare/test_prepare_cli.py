"""prepare_data.py end to end on a tiny FiftyOne dataset."""

import subprocess
import sys
from pathlib import Path

import fiftyone as fo
import pytest
from prepare_testdata import write_image

from common.cli import UserError
from prepare import layout
from prepare.cli import prepare
from prepare.mask_png import read_mask

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dataset(dataset_name, tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "data"))
    dataset = fo.Dataset(dataset_name)
    samples = []
    for i in range(12):
        ring = [(0.25, 0.25), (0.75, 0.25), (0.75, 0.75), (0.25, 0.75)]
        sample = fo.Sample(
            filepath=str(write_image(tmp_path / f"q{i}.jpg", 16, 8)), tags=["train"], site="S", quadrat_id=f"Q{i // 2}"
        )
        sample["gt_polylines"] = fo.Polylines(
            polylines=[
                fo.Polyline(label=["Acropora", "Pavona", "Porites"][i % 3], points=[ring], closed=True, filled=True)
            ]
        )
        samples.append(sample)
    dataset.add_samples(samples)
    yield dataset
    dataset.delete()


def test_default_folder_tags_policy(dataset, tmp_path, capsys):
    prepare(dataset.name, taxonomy="extended")
    root = tmp_path / "data" / "prepared" / f"{dataset.name}_extended"
    prepared = layout.load_prepared(root)
    assert len(prepared.split("train")) == 12 and prepared.classes[1] == "Acropora"
    mask = read_mask(prepared.mask_path(prepared.split("train")[0]))
    assert mask.shape == (8, 16) and (mask > 0).sum() == 32
    out = capsys.readouterr().out
    assert "no samples in the val split" in out and "masks drawn: 12" in out
    assert sorted(set(t for tags in dataset.values("tags") for t in tags)) == ["train"]  # no --write-tags, no change


def test_grouped_split_written_back_with_write_tags(dataset, tmp_path):
    prepare(
        dataset.name,
        taxonomy="finegrained",
        output_dir=str(tmp_path / "out"),
        split_policy="grouped",
        ratios="0.34,0.33,0.33",
        seed=1,
        write_tags=True,
    )
    tags = dict(zip(*dataset.values(["quadrat_id", "tags"])))
    assert all(len(t) == 1 for t in dataset.values("tags"))
    assert {t[0] for t in tags.values()} == set(layout.SPLITS)
    for quadrat in tags:  # all photos of one quadrat in one split
        assert len({tuple(t) for q, t in zip(*dataset.values(["quadrat_id", "tags"])) if q == quadrat}) == 1
    assert layout.load_prepared(tmp_path / "out").info["split_policy"]["seed"] == 1


def test_all_taxonomies(dataset, tmp_path):
    prepare(dataset.name, taxonomy="all")
    folders = sorted(p.name for p in (tmp_path / "data" / "prepared").iterdir())
    assert folders == [f"{dataset.name}_{t}" for t in ("agnostic", "extended", "finegrained", "main_families")]
    with pytest.raises(UserError, match="single taxonomy"):
        prepare(dataset.name, taxonomy="agnostic,extended", output_dir=str(tmp_path / "x"))


def test_runs_from_its_own_folder_and_errors_are_one_line(dataset):
    helped = subprocess.run(
        [sys.executable, "prepare_data.py", "--help"], cwd=REPO / "prepare", capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0 and "--split-policy" in helped.stdout
    failed = subprocess.run(
        [sys.executable, "prepare/prepare_data.py", "no_such_dataset", "--taxonomy", "nope"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        failed.returncode == 2
        and failed.stderr.startswith("error: taxonomy 'nope' not found")
        and "Traceback" not in failed.stderr
    )


def test_rerun_redraws_a_damaged_mask_instead_of_calling_it_up_to_date(dataset, tmp_path, capsys):
    from common.fileio import sha256_file

    prepare(dataset.name, taxonomy="extended")
    root = tmp_path / "data" / "prepared" / f"{dataset.name}_extended"
    entries = layout.load_prepared(root).entries
    emptied, edited = root / entries[0].mask, root / entries[1].mask
    emptied.write_bytes(b"")
    edited.write_bytes(edited.read_bytes()[:-12] + b"\0" * 12)  # same size, other bytes
    capsys.readouterr()
    prepare(dataset.name, taxonomy="extended")
    out = capsys.readouterr().out
    assert (
        "redrew 2 mask(s) whose file no longer matched the manifest" in out and "masks drawn: 2, up to date: 10" in out
    )
    assert [sha256_file(root / e.mask) for e in entries] == [e.mask_sha256 for e in entries]
    prepare(dataset.name, taxonomy="extended")
    assert "nothing changed since the last run: 12 masks up to date" in capsys.readouterr().out


def test_an_output_folder_that_cannot_be_made_is_one_sentence(dataset, tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(
        UserError, match=f"cannot write {tmp_path / 'taken' / 'out'}: a file is where a folder should be"
    ):
        prepare(dataset.name, taxonomy="extended", output_dir=str(tmp_path / "taken" / "out"))
    assert (tmp_path / "taken").read_text() == "a file, not a folder"


def test_leave_site_out_makes_the_site_the_test_set_and_records_it(dataset, tmp_path):
    dataset.set_values("site", ["North"] * 4 + ["S"] * 8)
    out = tmp_path / "out"
    with pytest.raises(UserError, match="no sample is from site 'Nort'; the dataset's sites are: North, S"):
        prepare(dataset.name, taxonomy="agnostic", output_dir=str(out), split_policy="leave-site-out", site="Nort")
    assert not out.exists()  # refused before anything was written
    prepare(dataset.name, taxonomy="agnostic", output_dir=str(out), split_policy="leave-site-out", site="North", seed=2)
    prepared = layout.load_prepared(out)
    north = {s.id for s in dataset if s.site == "North"}
    assert {e.sample_id for e in prepared.split("test")} == north
    assert len(prepared.split("train")) + len(prepared.split("val")) == 8 and prepared.split("val")
    policy = prepared.info["split_policy"]
    assert policy == {"policy": "leave-site-out", "ratios": [0.7, 0.2, 0.1], "seed": 2, "site": "North"}


def test_site_without_its_policy_is_refused_before_fiftyone_is_read(tmp_path):
    result = subprocess.run(
        [sys.executable, "prepare/prepare_data.py", "reef", "--site", "North"],
        cwd=REPO, capture_output=True, text=True, env={"PATH": "", "DATA_ROOT": str(tmp_path), "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        "error: --site goes with --split-policy leave-site-out only (not tags); add that or drop --site"
    )
