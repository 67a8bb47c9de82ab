"""Predicting a survey: the same masks evaluate predicts, FiftyOne and files written, reruns that redo nothing,
torchrun's shards giving exactly the single-process output, and bad photos listed, not fatal."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import fiftyone as fo
import finish_helpers
import numpy as np
import pytest
from evaluate_world import _image, make_run, predict_fp32, world_environment
from PIL import Image

from common.settings import REPO_ROOT, load_settings
from data_engineering import dataset_contract as contract
from evaluate.ecology import QuadratScale
from models.backbones import RandomBackboneWarning

SIZES = [(56, 56), (63, 84), (70, 70), (56, 56)]
PLACES = [("Reef", 2023), ("Reef", 2024), ("Lagoon", 2024), ("Reef", 2024)]


@pytest.fixture
def survey(tmp_path, monkeypatch):
    world_environment(tmp_path, monkeypatch, workers=0)
    images = [_image(h, w, seed=10 + i) for i, (h, w) in enumerate(SIZES)]
    name = f"test_survey_{uuid.uuid4().hex[:8]}"
    dataset = fo.Dataset(name)
    for i, (image, (site, year)) in enumerate(zip(images, PLACES)):
        path = tmp_path / "photos" / f"{site}_{year}_{i:02d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(image).save(path)
        dataset.add_sample(
            fo.Sample(
                filepath=str(path),
                tags=["new"] if i else [],
                **{contract.SITE: site, contract.YEAR: contract.stored_year(year)},
            )
        )
    run_dir = tmp_path / "runs" / "tiny-linear"
    make_run(run_dir)
    return tmp_path, dataset, run_dir, images


def predict(run_dir: Path, dataset: str, **options):
    from evaluate.survey import PredictOptions, predict_survey

    out = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomBackboneWarning)
        report = predict_survey(
            load_settings(),
            PredictOptions(run_dir=run_dir, dataset=dataset, precision="fp32", workers=0, **options),
            out,
        )
    return report, out.getvalue()


def read_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_survey_prediction_files_fields_and_reruns(survey):
    root, dataset, run_dir, images = survey
    report, printed = predict(run_dir, dataset.name, points=4)
    assert (report["photos"], report["predicted"], report["predicted_now"], report["reused"]) == (4, 4, 4, 0)
    assert (
        "1 photo(s) are not of the quadrat's proportions (Reef_2024_01.png); they were predicted" in printed
    )  # 63 x 84
    out_dir = Path(report["out_dir"])
    assert out_dir == run_dir / "predict" / dataset.name
    from prepare.mask_png import read_mask

    dataset.reload()
    expected = predict_fp32(run_dir, images)
    field = "pred_tiny_linear"
    for sample, mask in zip(dataset, expected):  # exactly the masks evaluate's predictor makes
        assert np.array_equal(read_mask(sample[field].mask_path), mask)
        assert 0 <= sample[f"{field}_uncertain"] <= 1 and 0 < sample[f"{field}_confidence"] <= 1
        assert sample[f"{field}_colonies"] is not None
    quadrats = read_rows(out_dir / "quadrats.csv")
    shares = [float(r["uncertain_share"]) for r in quadrats]
    assert len(quadrats) == 4 and shares == sorted(shares, reverse=True)
    site_year = {(r["site"], r["year"], r["class"]): r for r in read_rows(out_dir / "site_year.csv")}
    covers = [np.bincount(m.ravel(), minlength=3) / m.size * 100 for m in expected]
    reef_2024 = site_year[("Reef", "2024", "Acropora")]
    assert reef_2024["quadrats"] == "2" and float(reef_2024["mean_cover"]) == pytest.approx(
        (covers[1][1] + covers[3][1]) / 2, abs=1e-3
    )
    points = read_rows(out_dir / "points.csv")
    assert len(points) == 16
    by_name = {Path(s.filepath).name: read_mask(s[field].mask_path) for s in dataset}
    classes = ["background", "Acropora", "Porites"]
    assert all(classes[by_name[p["Name"]][int(p["Row"]), int(p["Column"])]] == p["Label"] for p in points)
    for name in ("survey.md", "cover_by_year.png", "size_frequency.png", "colonies.csv", "cover.csv"):
        assert (out_dir / name).is_file()

    again, _ = predict(run_dir, dataset.name)
    assert (again["predicted_now"], again["reused"]) == (0, 4)  # nothing unchanged is predicted twice
    first = Path(dataset.first().filepath)
    Image.fromarray(255 - images[0]).save(first)  # a photo replaced by a new one
    third, _ = predict(run_dir, dataset.name)
    assert (third["predicted_now"], third["reused"]) == (1, 3)


def test_the_write_in_batches_gives_what_one_batch_gives(survey, monkeypatch):
    """The colonies of a batch of photos at a time go to FiftyOne (memory flat over the survey): same fields, same files."""
    import evaluate.survey

    root, dataset, run_dir, images = survey
    field = "pred_tiny_linear_colonies"

    def outputs(report):
        dataset.reload()
        out_dir = Path(report["out_dir"])
        colonies = [[(p.label, p.points, p.confidence) for p in s[field].polylines] for s in dataset]
        files = {
            name: (out_dir / name).read_text() for name in ("quadrats.csv", "colonies.csv", "cover.csv", "survey.md")
        }
        return colonies, files

    whole, printed_whole = predict(run_dir, dataset.name)
    monkeypatch.setattr(evaluate.survey, "WRITE_BATCH", 3)  # 4 photos: batches of 3 and 1
    batched, printed_batched = predict(run_dir, dataset.name)
    assert batched["reused"] == 4 and outputs(batched) == outputs(whole)
    assert sum(len(c) for c in outputs(batched)[0]) > 0
    assert printed_batched.count("not of the quadrat's proportions") == 1


def test_photos_have_the_year_as_a_number_from_text_and_from_the_int_years_of_older_datasets(tmp_path):
    from evaluate.survey import PredictOptions, select_photos

    for stored in (["2023", None], [2023, None]):  # now, and as reefseg wrote years before they were text
        dataset = fo.Dataset(f"test_survey_years_{uuid.uuid4().hex[:8]}")
        dataset.add_samples(
            [fo.Sample(filepath=str(tmp_path / f"{i}.jpg"), **{contract.YEAR: y}) for i, y in enumerate(stored)]
        )
        photos = select_photos(dataset, PredictOptions(tmp_path / "runs" / "x", dataset.name))
        assert [p.year for p in photos] == [2023, None], stored
        dataset.delete()


def test_a_killed_run_continues_where_it_stopped(survey):
    _, dataset, run_dir, _ = survey
    report, _ = predict(run_dir, dataset.name)
    journal = Path(report["out_dir"]) / "predictions.rank0.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # killed while appending the third
    resumed, _ = predict(run_dir, dataset.name)
    assert (resumed["predicted_now"], resumed["reused"], resumed["predicted"]) == (2, 2, 4)


def test_tags_views_and_unreadable_photos(survey):
    _, dataset, run_dir, _ = survey
    Path(dataset.last().filepath).write_bytes(b"not a png at all")
    report, _ = predict(run_dir, dataset.name, tags=("new",))
    assert report["photos"] == 3 and report["predicted"] == 2 and len(report["unreadable"]) == 1
    assert "03.png" in report["unreadable"][0]
    from common.cli import UserError

    with pytest.raises(UserError, match="no saved view"):
        predict(run_dir, dataset.name, view="nope")
    with pytest.raises(UserError, match="nothing to predict"):
        predict(run_dir, dataset.name, tags=("missing",))


def test_a_wrong_dataset_view_or_tag_is_refused_before_any_backbone_is_built(survey, monkeypatch):
    _, dataset, run_dir, _ = survey
    from common.cli import UserError
    from evaluate import survey as survey_module

    def never(*args, **kwargs):
        raise AssertionError("the backbone was built before the arguments were checked")

    monkeypatch.setattr(survey_module, "build_model", never)
    for options, refusal in (
        ({"dataset": "no_such_dataset"}, "FiftyOne dataset 'no_such_dataset' not found"),
        ({"view": "nope"}, "no saved view"),
        ({"tags": ("missing",)}, "nothing to predict"),
    ):
        with pytest.raises(UserError, match=refusal):
            predict(run_dir, options.pop("dataset", dataset.name), **options)


def test_another_run_of_the_same_name_is_refused(survey, tmp_path):
    _, dataset, run_dir, _ = survey
    predict(run_dir, dataset.name)
    other = tmp_path / "elsewhere" / "tiny-linear"
    make_run(other, seed=9)
    from common.cli import UserError

    with pytest.raises(UserError, match="belongs to run"):
        predict(other, dataset.name)


def test_a_run_of_another_taxonomy_than_the_earlier_predictions_is_refused(survey):
    root, dataset, run_dir, _ = survey
    predict(run_dir, dataset.name, tags=("new",))
    before = [read_mask_of(s) for s in dataset.match_tags("new")]
    (root / "taxonomies" / "tinycoral.yaml").write_text(
        "name: tinycoral\nclasses:\n  - {name: coral, color: [255, 127, 80]}\n"
    )
    # the run retrained in the same folder with another taxonomy
    make_run(run_dir, classes=["background", "coral"], palette=[[0, 0, 0], [255, 127, 80]], taxonomy="tinycoral")
    from common.cli import UserError

    with pytest.raises(UserError, match="made with taxonomy 'tinytax', but the run now predicts 'tinycoral'.*--delete"):
        predict(run_dir, dataset.name)
    dataset.reload()
    after = [read_mask_of(s) for s in dataset.match_tags("new")]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))  # nothing was written
    from evaluate.cli import evaluate

    evaluate(str(run_dir), dataset=dataset.name, delete=True)  # the fix the message gives
    report, _ = predict(run_dir, dataset.name)
    assert report["predicted_now"] == 4


def read_mask_of(sample) -> np.ndarray:
    from prepare.mask_png import read_mask

    return read_mask(sample["pred_tiny_linear"].mask_path)


def test_mixed_sizes_are_predicted_each_at_its_own_size(survey):
    _, dataset, run_dir, images = survey
    _, printed = predict(run_dir, dataset.name, quadrat=QuadratScale.parse("1x0.75"))  # the 84 x 63 photo fits it
    assert (
        "3 photo(s) are not of the quadrat's proportions (Reef_2023_00.png, Lagoon_2024_02.png, Reef_2024_03.png)"
        in printed
    )
    dataset.reload()
    assert [read_mask_of(s).shape for s in dataset] == [image.shape[:2] for image in images] == SIZES


def test_two_torchrun_processes_give_the_single_process_output(survey):
    root, dataset, run_dir, _ = survey
    twin = dataset.clone(f"{dataset.name}_twin")
    single, _ = predict(run_dir, dataset.name)
    env = {**os.environ, "WORKERS": "1", "OMP_NUM_THREADS": "1"}  # a decoding worker per process, as on GPUs
    # the run is given first, positionally: torchrun's own --run-path flag would swallow an abbreviated --run
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(REPO_ROOT / "evaluate" / "predict.py"),
            str(run_dir),
            "--dataset",
            twin.name,
            "--precision",
            "fp32",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "photos selected" in done.stdout
    shard_dir = run_dir / "predict" / twin.name
    assert (shard_dir / "predictions.rank0.jsonl").is_file() and (shard_dir / "predictions.rank1.jsonl").is_file()
    single_dir = Path(single["out_dir"])
    twin.reload()
    for a, b in zip(dataset.sort_by("filepath"), twin.sort_by("filepath")):
        assert Path(a["pred_tiny_linear"].mask_path).read_bytes() == Path(b["pred_tiny_linear"].mask_path).read_bytes()
        assert [p.points for p in a["pred_tiny_linear_colonies"].polylines] == [
            p.points for p in b["pred_tiny_linear_colonies"].polylines
        ]
        assert a["pred_tiny_linear_uncertain"] == b["pred_tiny_linear_uncertain"]
    for name in ("site_year.csv", "cover.csv", "colonies.csv", "size_frequency.csv"):
        assert (single_dir / name).read_text() == (shard_dir / name).read_text(), name
    shutil.rmtree(shard_dir)


def test_colonies_are_traced_beside_the_next_photos_model(survey, monkeypatch):
    import gc
    import threading

    from evaluate import finish
    from evaluate import survey as survey_module

    _, dataset, run_dir, _ = survey
    threads, frozen, traced = [], [], finish.find_colonies

    def tracing(mask, confidence):
        threads.append(threading.current_thread().name)
        frozen.append(gc.get_freeze_count())  # what was loaded is out of the collector's full passes
        return traced(mask, confidence)

    written, writing = [], survey_module.write_back

    def write_back(*args, **kwargs):
        written.append(gc.get_freeze_count())  # and while the journals are read back into FiftyOne documents
        return writing(*args, **kwargs)

    monkeypatch.setattr(finish, "find_colonies", tracing)
    monkeypatch.setattr(survey_module, "write_back", write_back)
    gc.unfreeze()
    report, _ = predict(run_dir, dataset.name)
    assert len(threads) == 4 and all(name.startswith("predict-finish") for name in threads)
    assert min(frozen) > 100_000 and written and min(written) > 100_000  # torch, FiftyOne and the model
    assert gc.get_freeze_count() == 0  # given back after the command: a finished run's model can be collected
    assert survey_module.WAITING in report["parts"] and report["predicted_now"] == 4


def test_finishing_in_worker_processes_as_beside_a_gpu_gives_the_threads_output(survey, monkeypatch):
    """Beside a GPU the PNGs, colonies and journal lines are made in spawned processes, several photos in hand:
    the same journal, masks and FiftyOne fields as the one thread a CPU uses."""
    from concurrent.futures import ProcessPoolExecutor

    from evaluate import survey as survey_module

    _, dataset, run_dir, _ = survey

    def predicted():
        dataset.reload()
        return [
            (
                s.id,
                [(p.label, p.points, p.confidence) for p in s["pred_tiny_linear_colonies"].polylines],
                s["pred_tiny_linear_uncertain"],
            )
            for s in dataset
        ]

    report, _ = predict(run_dir, dataset.name)
    out_dir = Path(report["out_dir"])
    journal = (out_dir / "predictions.rank0.jsonl").read_bytes()
    masks = {p.name: p.read_bytes() for p in (out_dir / "masks").iterdir()}
    by_thread = predicted()
    shutil.rmtree(out_dir)
    pools, original = [], survey_module.finishing_pool

    def recorded(device):
        pools.append(original(device))
        return pools[-1]

    monkeypatch.setattr(survey_module, "finishing_processes", lambda device: 2)  # as beside a GPU
    monkeypatch.setattr(survey_module, "finishing_pool", recorded)
    again, _ = predict(run_dir, dataset.name)
    assert isinstance(pools[0][0], ProcessPoolExecutor) and pools[0][1] == 2
    assert again["predicted_now"] == 4 and again["parts"]["colonies"] > 0
    lines = (out_dir / "predictions.rank0.jsonl").read_bytes()
    assert sorted(lines.splitlines()) == sorted(journal.splitlines())  # in the order the photos were finished
    assert {p.name: p.read_bytes() for p in (out_dir / "masks").iterdir()} == masks
    assert predicted() == by_thread


def test_worker_processes_beside_a_gpu_are_a_quarter_of_this_processs_cores(monkeypatch):
    import torch

    from evaluate.survey import finishing_processes

    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert finishing_processes(torch.device("cpu")) == 0  # one thread beside the model
    assert finishing_processes(torch.device("cuda")) == 4
    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    assert finishing_processes(torch.device("cuda")) == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun --nproc_per_node=8 on a 16-core node
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert finishing_processes(torch.device("cuda")) == 1


def test_a_worker_process_that_dies_is_one_sentence_and_the_rerun_resumes(survey, monkeypatch):
    from common.cli import UserError
    from evaluate import survey as survey_module

    _, dataset, run_dir, _ = survey
    finishing = survey_module.finish_photo
    monkeypatch.setattr(survey_module, "finishing_processes", lambda device: 2)  # as beside a GPU
    monkeypatch.setattr(survey_module, "finish_photo", finish_helpers.dying_finish)
    with pytest.raises(UserError, match="a worker process making the photos' masks and colonies stopped"):
        predict(run_dir, dataset.name)
    monkeypatch.setattr(survey_module, "finish_photo", finishing)
    report, _ = predict(run_dir, dataset.name)
    assert report["predicted_now"] == 4 and report["predicted"] == 4
