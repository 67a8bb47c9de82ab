"""The `evaluate` stage's commands: evaluate.py, app.py and push_to_cvat.py call these.

Heavy imports (torch, FiftyOne) happen inside the commands, so `--help` answers at once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from common.cli import UserError, run
from common.settings import load_settings


def evaluate(
    run: str,
    dataset: str | None = None,
    split: str = "val",
    checkpoint: str = "best",
    window: int | None = None,
    window_stride: int | None = None,
    batch_size: int = 4,
    tta: bool = False,
    tta_scales: Sequence[float] | None = None,
    precision: str = "auto",
    device: str | None = None,
    data_dir: str | None = None,
    weights: str | None = None,
    delete: bool = False,
    quadrat_size: str = "1x1",
    crop: int | None = None,
    stride: int | None = None,
) -> None:
    """Predict a split with a trained run, score it, write it back to FiftyOne and report it.

    Args:
        run: the run folder (runs/<name>) made by train/train.py.
        dataset: the FiftyOne dataset (default DEMO_DATASET).
        split: val, test, train or all.
        checkpoint: best or last.
        window: sliding-window size in pixels (default: the run's window, 392 for a ViT-*/14 run with the default config).
        window_stride: largest step between windows in pixels, spread evenly (default: the run's; with --window alone, the window).
        batch_size: windows per forward pass.
        tta: also predict the mirrored image and average the logits (about twice the time).
        tta_scales: also predict the image resized by these factors, e.g. 0.75,1,1.25, and average the logits (1: as it is; the time grows with the sum of the squared scales).
        precision: auto (bf16 where the device computes it natively), bf16 or fp32.
        device: cpu, cuda, cuda:1 ... (default DEVICE).
        data_dir: prepared folder with the ground truth (default DATA_ROOT/prepared/<dataset>_<run taxonomy>).
        weights: backbone weights the run was trained on (default DINO_WEIGHTS).
        delete: remove this run's fields, evaluations and saved view from the dataset instead (files stay).
        quadrat_size: the ground one photo covers, WIDTHxHEIGHT in m or cm (default 1x1 m), for colony sizes in cm².
        crop: deprecated name of --window.
        stride: deprecated name of --window-stride.
    """
    window, window_stride = _deprecated_window_flags(window, window_stride, crop, stride)
    settings = load_settings()
    dataset_name = dataset or settings.demo_dataset
    run_dir = Path(run).expanduser().resolve()
    if delete:
        from evaluate import writeback
        from evaluate.fields import RunFields
        from evaluate.pipeline import run_lock

        ds = writeback.load_dataset(dataset_name)
        fields = RunFields.for_run(run_dir.name)
        with run_lock(run_dir):
            writeback.check_owner(ds, fields, run_dir)
            removed = writeback.delete_run(ds, fields)
        print(
            f"removed from {dataset_name!r}: {', '.join(removed)}"
            if removed
            else f"run {run_dir.name} has nothing in {dataset_name!r}"
        )
        return
    from evaluate.ecology import QuadratScale
    from evaluate.pipeline import EvaluateOptions, evaluate_run

    options = EvaluateOptions.from_settings(
        settings, run_dir, dataset=dataset_name, split=split, which=checkpoint, window=window, window_stride=window_stride,
        batch_size=batch_size, tta=tta, tta_scales=tuple(tta_scales) if tta_scales else None, precision=precision,
        device=device, weights=weights, quadrat=QuadratScale.parse(quadrat_size),
        data_dir=Path(data_dir).expanduser().resolve() if data_dir else None,
    )  # fmt: skip
    if min(window or 1, window_stride or 1, batch_size) < 1:
        raise UserError("--window, --window-stride and --batch-size must be positive")
    evaluate_run(options)


def _deprecated_window_flags(
    window: int | None, window_stride: int | None, crop: int | None, stride: int | None
) -> tuple[int | None, int | None]:
    """`--crop`/`--stride`, evaluate's old names of `--window`/`--window-stride`, still work, with one line saying so."""
    old = [name for name, value in (("--crop", crop), ("--stride", stride)) if value is not None]
    if old:
        print(
            f"note: {' and '.join(old)} are deprecated names of --window and --window-stride; use those",
            file=sys.stderr,
        )
    if (crop is not None and window is not None) or (stride is not None and window_stride is not None):
        raise UserError("pass the window as --window/--window-stride only (--crop and --stride are their old names)")
    return (window if crop is None else crop), (window_stride if stride is None else stride)


def evaluate_main() -> None:
    run(evaluate, secrets=load_settings().secrets)


def predict(
    run: str,
    dataset: str,
    tags: str | None = None,
    view: str | None = None,
    checkpoint: str = "best",
    window: int | None = None,
    window_stride: int | None = None,
    batch_size: int = 4,
    tta: bool = False,
    tta_scales: Sequence[float] | None = None,
    precision: str = "auto",
    device: str | None = None,
    weights: str | None = None,
    quadrat_size: str = "1x1",
    uncertainty: float = 0.5,
    points: int = 0,
    point_sampling: str = "stratified",
    workers: int | None = None,
    refine: str = "none",
    sam_weights: str | None = None,
    sam_points: int = 3,
    sam_negative_points: int = 2,
) -> None:
    """Predict a survey's photos with a trained run: masks, colonies, doubt, cover per site and year, sizes.

    Args:
        run: the run folder (runs/<name>) made by train/train.py.
        dataset: the FiftyOne dataset with the photos (data_engineering/import_images.py makes one from a folder).
        tags: predict only samples with one of these tags (comma-separated).
        view: predict only the samples of this saved view.
        checkpoint: best or last.
        window: sliding-window size in pixels (default: the run's).
        window_stride: largest step between windows in pixels (default: the run's; with --window alone, the window).
        batch_size: windows per forward pass.
        tta: also predict the mirrored image and average the logits (about twice the time).
        tta_scales: also predict the image resized by these factors, e.g. 0.75,1,1.25, and average the logits (1: as it is).
        precision: auto (bf16 where the device computes it natively), bf16 or fp32.
        device: cpu, cuda, cuda:1 ... (default DEVICE; under torchrun each process takes the GPU of its local rank).
        weights: backbone weights the run was trained on (default DINO_WEIGHTS).
        quadrat_size: the ground one photo covers, WIDTHxHEIGHT in m or cm (default 1x1 m), for colony sizes in cm².
        uncertainty: a pixel whose winning class is below this probability counts as doubtful (per-image share).
        points: also sample this many points per photo from the prediction into points.csv (CoralNet-style; 0: none).
        point_sampling: stratified (one point per grid cell, as CoralNet) or random.
        workers: processes decoding photos ahead of the model (default WORKERS).
        refine: none, or sam: prompt SAM with each predicted colony and keep its mask with the colony's majority class.
        sam_weights: with --refine sam: a segment_anything checkpoint (.pth, e.g. CoralSCoP's vit_b_coralscop.pth) or a Hugging Face SAM folder.
        sam_points: positive points SAM gets inside each colony, besides its box.
        sam_negative_points: negative points SAM gets on other classes' colonies in the box (0: none).
    """
    settings = load_settings(device=device, workers=workers)
    from evaluate.refine_sam import RefineSettings, check_refine_flags
    from evaluate.sam_models import check_sam_weights

    # the SAM weights are read and checked completely before FiftyOne, the run or any photo is touched
    checked_sam = check_sam_weights(str(sam_weights)) if check_refine_flags(refine, sam_weights) else None
    from evaluate.ecology import QuadratScale
    from evaluate.survey import PredictOptions, check_options, predict_survey

    options = PredictOptions(
        run_dir=Path(run).expanduser().resolve(), dataset=dataset,
        tags=tuple(t.strip() for t in (tags or "").split(",") if t.strip()), view=view, which=checkpoint,
        window=window, window_stride=window_stride, batch_size=batch_size, tta=tta, tta_scales=tuple(tta_scales or (1.0,)),
        precision=precision, weights=weights, quadrat=QuadratScale.parse(quadrat_size), uncertainty=uncertainty, points=points, point_sampling=point_sampling,
        workers=settings.workers, seed=settings.seed,
        sam_weights=checked_sam, sam=RefineSettings(positive_points=sam_points, negative_points=sam_negative_points),
    )  # fmt: skip
    if min(window or 1, window_stride or 1) < 1:
        raise UserError("--window and --window-stride must be positive")
    check_options(options)
    report = predict_survey(settings, options)
    _leave_torchrun()
    if "photos" not in report:  # another process of torchrun: process 0 reports
        return
    from common.table import format_table

    print(format_table(["", "value"], [
        ("photos selected", report["photos"]), ("predicted now", report["predicted_now"]),
        ("unchanged since an earlier run (reused)", report["reused"]), ("unreadable (left out)", len(report["unreadable"])),
        ("images per second (this process)", round(report["images_per_second"], 3)),
    ]))  # fmt: skip
    for line in report["unreadable"]:
        print(f"unreadable: {line}")
    total = sum(report["parts"].values())
    if total:
        print(
            "where the time went: "
            + ", ".join(f"{part} {seconds:.1f} s ({seconds / total:.0%})" for part, seconds in report["parts"].items())
        )
    print(f"\ncover per site and year (mean over quadrats):\n{report['site_year_table']}\n")
    print(
        f"survey report: {Path(report['out_dir']) / 'survey.md'}; most doubtful photos first: {Path(report['out_dir']) / 'quadrats.csv'}"
    )


def _leave_torchrun() -> None:
    """Close torchrun's process group, if this process joined one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def predict_main() -> None:
    run(predict, secrets=load_settings().secrets)


def score_points(
    run: str,
    dataset: str,
    field: str = "gt_points",
    tags: str | None = None,
    checkpoint: str = "best",
) -> None:
    """Score a run's predictions at a dataset's imported point annotations (CoralNet-style), as reef monitoring does.

    Args:
        run: the run folder (runs/<name>) whose predictions (predict.py or evaluate.py) the dataset holds.
        dataset: the FiftyOne dataset with the points (data_engineering/import_points.py puts them there).
        field: the sample field holding the points (fo.Keypoints).
        tags: score only samples with one of these tags (comma-separated).
        checkpoint: best or last (the checkpoint whose classes the predictions have).
    """
    settings = load_settings()
    from common.names import check_name
    from data_engineering.dataset_contract import POINTS_FIELD

    check_name(dataset, "dataset name", "pass --dataset with a FiftyOne dataset's name")
    if checkpoint not in ("best", "last"):
        raise UserError(f"--checkpoint must be best or last, not {checkpoint!r}")
    run_dir = Path(run).expanduser().resolve()
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist; pass a folder made by train/train.py")
    from evaluate.point_scores import POINT_FILES, ScorePointsOptions, score_dataset_points
    from prepare.taxonomy import taxonomy_dirs

    options = ScorePointsOptions(
        run_dir=run_dir, dataset=dataset, field=field or POINTS_FIELD, which=checkpoint,
        tags=tuple(t.strip() for t in (tags or "").split(",") if t.strip()),
        taxonomy_dirs=tuple(taxonomy_dirs(settings.taxonomy_dirs)),
    )  # fmt: skip
    report = score_dataset_points(options)
    if report["dropped"]:
        print(f"points with labels the taxonomy drops (not scored): {report['dropped']}")
    if report["outside"]:
        print(
            f"warning: {report['outside']} point(s) lie outside their image and were not scored; import the CSV again"
        )
    if report["unpredicted"]:
        shown = ", ".join(report["unpredicted"][:5]) + (" ..." if len(report["unpredicted"]) > 5 else "")
        print(
            f"warning: {len(report['unpredicted'])} sample(s) with points have no prediction of this run ({shown}); "
            "predict them with evaluate/predict.py"
        )
    out_dir = Path(report["out_dir"])
    print(
        f"{report['points']} points on {report['images']} images; files: "
        + ", ".join(str(out_dir / n) for n in POINT_FILES)
    )


def score_points_main() -> None:
    run(score_points, secrets=load_settings().secrets)


def app(
    dataset: str | None = None,
    address: str | None = None,
    port: int | None = None,
    view: str | None = None,
    workspace: str | None = None,
    screenshot: str | None = None,
) -> None:
    """Open the FiftyOne App on a dataset (remote mode: browse from any machine that reaches the address).

    Args:
        dataset: the FiftyOne dataset (default DEMO_DATASET).
        address: the address the App listens on (default APP_ADDRESS; 0.0.0.0 for every interface).
        port: the App's port (default APP_PORT).
        view: a saved view to open, e.g. worst_first_<run>.
        workspace: a saved workspace to open, e.g. review_<run> (the grid beside the Model Evaluation panel).
        screenshot: save a PNG of the page (headless chromium + playwright) to this path and exit.
    """
    settings = load_settings(app_address=address, app_port=port)
    from evaluate import writeback

    ds = writeback.load_dataset(dataset or settings.demo_dataset)
    if view and not ds.has_saved_view(view):
        raise UserError(
            f"dataset {ds.name!r} has no saved view {view!r}; saved views: {', '.join(ds.list_saved_views()) or 'none'}"
        )
    if workspace and not ds.has_workspace(workspace):
        raise UserError(
            f"dataset {ds.name!r} has no saved workspace {workspace!r}; workspaces: {', '.join(ds.list_workspaces()) or 'none'}"
        )
    session = writeback.launch_app(ds, settings.app_address, settings.app_port, view, workspace)
    url = writeback.app_url(settings.app_address, settings.app_port, ds.name, view)
    print(f"FiftyOne App: {url}  (Ctrl-C to stop)", flush=True)
    if screenshot:
        from evaluate.app_screenshot import capture, wait_for_app

        wait_for_app(url)
        active = ds.app_config.active_fields.paths if ds.app_config.active_fields else []
        capture(url, screenshot, wait_for=active[0] if active else "samples")
        print(f"screenshot: {screenshot}")
        return
    session.wait(-1)


def app_main() -> None:
    run(app, secrets=load_settings().secrets)


def push_to_cvat(
    run: str,
    task_id: int,
    replace: bool = False,
    dry_run: bool = False,
    checkpoint: str = "best",
    batch_size: int = 4,
    tta: bool = False,
    precision: str = "auto",
    device: str | None = None,
    weights: str | None = None,
) -> None:
    """Predict every image of a CVAT task and add the colonies as automatic polygons for annotators to correct.

    Args:
        run: the run folder (runs/<name>) made by train/train.py.
        task_id: the CVAT task (CVAT_URL and credentials from settings).
        replace: first remove the task's earlier automatic shapes (shapes people drew are never touched).
        dry_run: predict and print what would be sent, send nothing.
        checkpoint: best or last.
        batch_size: windows per forward pass.
        tta: also predict the mirrored image and average.
        precision: auto (bf16 where the device computes it natively), bf16 or fp32.
        device: cpu, cuda, ... (default DEVICE).
        weights: backbone weights the run was trained on (default DINO_WEIGHTS).
    """
    settings = load_settings()
    from evaluate.cvat_push import PushOptions, push_predictions
    from prepare.taxonomy import taxonomy_dirs

    if not isinstance(task_id, int) or task_id < 1:
        raise UserError(f"--task-id must be a CVAT task number, not {task_id!r}")
    options = PushOptions(
        run_dir=Path(run).expanduser().resolve(), task_id=task_id, replace=replace, dry_run=dry_run, which=checkpoint,
        batch_size=batch_size, tta=tta, precision=precision, device=device or settings.device,
        weights=weights or settings.dino_weights or None, taxonomy_dirs=tuple(taxonomy_dirs(settings.taxonomy_dirs)),
    )  # fmt: skip
    push_predictions(settings, options)


def push_main() -> None:
    run(push_to_cvat, secrets=load_settings().secrets)


def deploy_nuclio(
    run: str,
    out: str,
    checkpoint: str = "best",
    precision: str = "auto",
    batch_size: int = 4,
    shape: str = "mask",
    gpu: bool = False,
    timeout: int = 120,
    weights: str | None = None,
    replace: bool = False,
) -> None:
    """Write a Nuclio function folder for CVAT's automatic annotation (deploy it with `nuctl deploy --path <out>`).

    Args:
        run: the run folder (runs/<name>) made by train/train.py.
        out: the folder to write (new or empty; see --replace).
        checkpoint: best or last.
        precision: auto (bf16 where the device supports it), bf16 or fp32.
        batch_size: windows per forward pass.
        shape: mask (colonies with their holes; CVAT can still convert them to polygons) or polygon.
        gpu: build for a CUDA GPU (PyPI's CUDA torch, one nvidia.com/gpu) instead of the CPU.
        timeout: seconds a request may take (eventTimeout; CVAT itself waits CVAT_NUCLIO_DEFAULT_TIMEOUT, 120 by default).
        weights: backbone weights the run was trained on (default DINO_WEIGHTS); copied into the folder.
        replace: regenerate a folder this command made before.
    """
    settings = load_settings(device="cpu")  # the run is only checked here; the function picks its device where it runs
    from evaluate.nuclio_function import NuclioOptions, write_function

    if not isinstance(batch_size, int) or batch_size < 1 or not isinstance(timeout, int):
        raise UserError("--batch-size and --timeout must be positive whole numbers")
    options = NuclioOptions(
        run_dir=Path(run).expanduser().resolve(), out=Path(out), which=checkpoint, precision=precision, batch_size=batch_size,
        shape=shape, gpu=bool(gpu), timeout_s=timeout, weights=weights, replace=bool(replace),
    )  # fmt: skip
    document = write_function(settings, options)
    annotations = document["metadata"]["annotations"]
    labels = ", ".join(label["name"] for label in json.loads(annotations["spec"]))
    print(
        f"wrote Nuclio function {document['metadata']['name']} ({annotations['type']}, labels {labels}) to {options.out}"
    )
    print(f"deploy it: nuctl deploy --project-name cvat --path {options.out} --platform local")


def deploy_nuclio_main() -> None:
    run(deploy_nuclio, secrets=load_settings().secrets)


def webhook_service(
    run: str,
    address: str = "127.0.0.1",
    port: int = 8765,
    checkpoint: str = "best",
    batch_size: int = 4,
    precision: str = "auto",
    device: str | None = None,
    weights: str | None = None,
) -> None:
    """Serve CVAT's webhook: when a job goes "in progress", add the run's colonies to its frames as automatic polygons.

    Args:
        run: the run folder (runs/<name>) made by train/train.py.
        address: the address to listen on (0.0.0.0 for every interface; CVAT must reach it).
        port: the port to listen on; the webhook's URL in CVAT is http://<address>:<port>/webhook.
        checkpoint: best or last.
        batch_size: windows per forward pass.
        precision: auto (bf16 where the device supports it), bf16 or fp32.
        device: cpu, cuda, ... (default DEVICE).
        weights: backbone weights the run was trained on (default DINO_WEIGHTS).
    """
    settings = load_settings(device=device)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise UserError(f"--port must be a port number, not {port!r}")
    import asyncio
    import logging

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from evaluate.cvat_push import PushOptions
    from evaluate.cvat_webhook import PreAnnotator, create_app

    if not settings.cvat_webhook_secret:
        raise UserError(
            "CVAT_WEBHOOK_SECRET is not set; set it to the secret of the webhook in CVAT (Project > Actions > Setup webhooks)"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from prepare.taxonomy import taxonomy_dirs

    options = PushOptions(
        run_dir=Path(run).expanduser().resolve(), task_id=0, which=checkpoint, batch_size=batch_size, precision=precision,
        device=settings.device, weights=weights or settings.dino_weights or None,
        taxonomy_dirs=tuple(taxonomy_dirs(settings.taxonomy_dirs)),
    )  # fmt: skip
    annotator = PreAnnotator(settings, options)
    config = Config()
    config.bind = [f"{address}:{port}"]
    config.accesslog = None
    print(f"listening on http://{address}:{port}/webhook for CVAT's job events (Ctrl-C to stop)", flush=True)
    try:
        asyncio.run(serve(create_app(settings, annotator), config))
    finally:
        annotator.close()


def webhook_main() -> None:
    run(webhook_service, secrets=load_settings().secrets)
