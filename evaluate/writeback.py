"""The FiftyOne adapter of `evaluate`: a run's predictions, scores and colony errors on the samples.

Field names come from `evaluate.fields` (docs/evaluation.md). Masks stay on disk as palette PNGs
and are referenced by path. FiftyOne reads a palette PNG as RGB colours, so mask targets are keyed
by the taxonomy's colours (`"#3cb44b": "Acropora"`): the App shows class names in the masks' own
colours, and FiftyOne's `evaluate_segmentations` counts exactly the pixels `models.metrics` counts
(the ignore colour is no target, so both skip it). Every write touches only this run's fields and
the evaluate-owned ground-truth fields of its taxonomy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common.settings  # noqa: F401  (exports .env's FIFTYONE_* keys before fiftyone is imported)

# isort: split
import fiftyone as fo
import fiftyone.core.fields as fof
import fiftyone.core.utils as fou
import numpy as np
from bson import ObjectId
from fiftyone import ViewField as F

from common import database
from common.cli import UserError
from evaluate.colonies import Colony
from evaluate.fields import (
    COLONY_IOU,
    CONFIDENCE,
    INFO_EVALUATIONS,
    RunFields,
    class_key,
    gt_colonies_field,
    gt_segmentation_field,
)
from evaluate.panel_metrics import PLUGINS_DIR, SEGMENTATION_METRICS, evaluation_panel, metrics_plugin, missing_metrics
from evaluate.reports import ColonyCounts
from prepare.layout import BACKGROUND_NAME
from prepare.polygons import polygons_to_fiftyone_points
from prepare.taxonomy import Taxonomy

NO_LABEL = "(none)"  # FiftyOne's name for "no label" (its default `missing`), which no taxonomy class has


def hex_colour(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb))


def rgb_mask_targets(classes: Sequence[str], palette: Sequence[Sequence[int]]) -> dict[str, str]:
    """`{"#rrggbb": class}`; two classes of one colour could not be told apart, so that is an error."""
    targets: dict[str, str] = {}
    for name, colour in zip(classes, palette):
        key = hex_colour(colour)
        if key in targets:
            raise UserError(
                f"classes {targets[key]!r} and {name!r} share the colour {key}; give each class its own colour in the taxonomy file"
            )
        targets[key] = name
    return targets


def load_dataset(name: str) -> fo.Dataset:
    return database.load_dataset(name, "pass --dataset with one of them")


def evaluations(dataset: fo.Dataset) -> dict[str, dict[str, Any]]:
    """{eval key: {"run", "split", "taxonomy"}} of the runs `evaluate` wrote into the dataset."""
    return dict(dataset.info.get(INFO_EVALUATIONS) or {})


def _run_field_names(dataset: fo.Dataset, fields: RunFields) -> list[str]:
    return [name for name in fields.sample_fields if dataset.has_sample_field(name)]


def _evaluation_field_names(dataset: fo.Dataset, fields: RunFields) -> list[str]:
    """Per-sample fields FiftyOne's own evaluations add under this run's eval keys, where the dataset has them."""
    names = [f"{fields.eval_key}_{m}" for m in ("accuracy", "precision", "recall")] + [
        f"{fields.colony_eval_key}_{k}" for k in ("tp", "fp", "fn")
    ]
    return [name for name in names if dataset.has_sample_field(name)]


def _holds(field: fof.Field, kind: type) -> bool:
    """Whether a dataset field is of the kind evaluate writes under its name (a label type, or float)."""
    if kind is float:
        return isinstance(field, fof.FloatField)
    return isinstance(field, fof.EmbeddedDocumentField) and issubclass(field.document_type, kind)


def _foreign_fields(dataset: fo.Dataset, fields: RunFields, taxonomy: str) -> list[str]:
    """Fields evaluate would write that someone else made: a shared ground-truth field of a taxonomy no recorded
    evaluation has, or any of its names holding another kind of value."""
    schema = dataset.get_field_schema()
    ours = {record.get("taxonomy") for record in evaluations(dataset).values()}
    gt_mask, gt_colonies = gt_segmentation_field(taxonomy), gt_colonies_field(taxonomy)
    kinds = {fields.prediction: fo.Segmentation, fields.colonies: fo.Polylines, fields.miou: float, fields.iou: fo.DynamicEmbeddedDocument,
             gt_mask: fo.Segmentation, gt_colonies: fo.Polylines}  # fmt: skip
    foreign = []
    for name, kind in kinds.items():
        if name not in schema:
            continue
        if not _holds(schema[name], kind):
            foreign.append(f"field {name!r} ({type(schema[name]).__name__}, evaluate writes {kind.__name__} there)")
        elif name in (gt_mask, gt_colonies) and taxonomy not in ours:
            foreign.append(f"field {name!r} (no evaluation of taxonomy {taxonomy!r} made it)")
    return foreign


def check_owner(dataset: fo.Dataset, fields: RunFields, run_dir: Path, taxonomy: str | None = None) -> None:
    """Refuse, before anything is written, to replace an evaluation, fields or a saved view that another run (or
    the user, or another tool) made under the names this run writes; `taxonomy` adds its shared ground-truth fields."""
    record = evaluations(dataset).get(fields.eval_key)
    if record is not None and Path(record["run"]) != run_dir:
        raise UserError(
            f"eval key {fields.eval_key!r} in dataset {dataset.name!r} belongs to run {record['run']}; "
            f"rename this run's folder, or remove that one first with: python evaluate/evaluate.py --run {record['run']} --dataset {dataset.name} --delete"
        )
    if record is None:
        taken = [
            key for key in (fields.eval_key, fields.colony_eval_key) if dataset.has_evaluation(key)
        ] + _run_field_names(dataset, fields)
        taken += _evaluation_field_names(dataset, fields) + [f"saved view {v}" for v in _run_views(dataset, fields)]
        taken += [f"workspace {fields.workspace}"] if dataset.has_workspace(fields.workspace) else []
        if taken:
            raise UserError(
                f"dataset {dataset.name!r} already has {', '.join(taken)}, not written by evaluate for run {run_dir}; rename this run's folder or remove them"
            )
    foreign = _foreign_fields(dataset, fields, taxonomy) if taxonomy is not None else []
    if foreign:
        raise UserError(
            f"dataset {dataset.name!r} already has {'; '.join(foreign)}, which evaluate would overwrite; rename or delete "
            f"{'it' if len(foreign) == 1 else 'them'} in FiftyOne (nothing was written)"
        )


def _run_views(dataset: fo.Dataset, fields: RunFields) -> list[str]:
    return [name for name in dataset.list_saved_views() if fields.owns_view(name)]


def delete_run(dataset: fo.Dataset, fields: RunFields) -> list[str]:
    """Remove one run's evaluations, fields, saved view and App settings; returns what went."""
    removed = []
    for key in (fields.eval_key, fields.colony_eval_key):
        if dataset.has_evaluation(key):
            with metrics_plugin():  # FiftyOne asks each custom metric's operator to clean up after itself
                dataset.delete_evaluation(key)
            removed.append(f"evaluation {key}")
    for name in _run_field_names(dataset, fields):
        dataset.delete_sample_field(name)
        removed.append(f"field {name}")
    for name in _run_views(dataset, fields):
        dataset.delete_saved_view(name)
        removed.append(f"saved view {name}")
    if dataset.has_workspace(fields.workspace):
        dataset.delete_workspace(fields.workspace)
        removed.append(f"workspace {fields.workspace}")
    forget = [fields.prediction, fields.colonies]
    records = evaluations(dataset)
    record = records.pop(fields.eval_key, None)
    if record is not None:
        if record["taxonomy"] not in {r["taxonomy"] for r in records.values()}:  # no other run needs its ground truth
            shared = [gt_segmentation_field(record["taxonomy"]), gt_colonies_field(record["taxonomy"])]
            forget += shared
            for name in shared:
                if dataset.has_sample_field(name):
                    dataset.delete_sample_field(name)
                    removed.append(f"field {name}")
        dataset.info[INFO_EVALUATIONS] = records
    _forget_app_fields(dataset, forget)
    dataset.save()
    return removed


def _forget_app_fields(dataset: fo.Dataset, names: Sequence[str]) -> None:
    dataset.mask_targets = {k: v for k, v in dataset.mask_targets.items() if k not in names}
    config = dataset.app_config
    if config.color_scheme is not None and config.color_scheme.fields:
        config.color_scheme.fields = [f for f in config.color_scheme.fields if f.get("path") not in names]
    if config.active_fields is not None:
        config.active_fields.paths = [p for p in config.active_fields.paths if p not in names]


def begin_run(dataset: fo.Dataset, fields: RunFields, run_dir: Path, split: str, taxonomy: str) -> None:
    """Clear this run's earlier write-back (a rerun replaces it) and record the run as the owner of its names."""
    check_owner(dataset, fields, run_dir, taxonomy)
    delete_run(dataset, fields)
    dataset.info[INFO_EVALUATIONS] = evaluations(dataset) | {
        fields.eval_key: {"run": str(run_dir), "split": split, "taxonomy": taxonomy}
    }
    dataset.save()


def record_prediction(dataset: fo.Dataset, fields: RunFields, run_dir: Path, taxonomy: str) -> None:
    """Record the run as the owner of its names after a prediction (predict.py), keeping an evaluation's record."""
    check_owner(dataset, fields, run_dir, taxonomy)
    if fields.eval_key not in evaluations(dataset):
        dataset.info[INFO_EVALUATIONS] = evaluations(dataset) | {
            fields.eval_key: {"run": str(run_dir), "split": "predict", "taxonomy": taxonomy}
        }
        dataset.save()


def class_colours(classes: Sequence[str], palette: Sequence[Sequence[int]]) -> list[dict[str, str]]:
    """ColorScheme `valueColors` of the taxonomy: every class name in its palette colour."""
    return [{"value": name, "color": hex_colour(colour)} for name, colour in zip(classes, palette)]


def configure_app(
    dataset: fo.Dataset, fields: RunFields, taxonomy: str, classes: Sequence[str], palette: Sequence[Sequence[int]]
) -> None:
    """Masks and colonies of both kinds in the taxonomy's colours and names; the review's fields switched on.

    Masks: RGB-hex mask targets on the palette PNGs, so the App shows each pixel in its palette colour
    with its class name. Colonies: coloured by label with the same palette (`colorBy: value`, per-field
    `valueColors`); ground-truth colonies are drawn filled, predicted ones as outlines
    (`colonies_to_polylines`), so the two are told apart where both are shown. Shown by default: both
    colony fields; both masks are one click away (each covers what is below it).
    """
    targets = rgb_mask_targets(classes, palette)
    gt_mask, gt_colonies = gt_segmentation_field(taxonomy), gt_colonies_field(taxonomy)
    dataset.mask_targets = dict(dataset.mask_targets) | {gt_mask: targets, fields.prediction: targets}
    ours = {fields.colonies, gt_colonies}
    scheme = dataset.app_config.color_scheme or fo.ColorScheme()
    kept = [f for f in (scheme.fields or []) if f.get("path") not in ours]
    scheme.fields = kept + [
        {"path": path, "colorByAttribute": "label", "valueColors": class_colours(classes, palette)}
        for path in sorted(ours)
    ]
    scheme.color_by = "value"  # by field, every colony of a field would have one colour
    dataset.app_config.color_scheme = scheme
    active = dataset.app_config.active_fields or fo.ActiveFields(paths=[])
    wanted = [fields.colonies, gt_colonies]
    active.paths = list(active.paths) + [p for p in wanted if p not in active.paths]
    dataset.app_config.active_fields = active
    dataset.save()


def order_sidebar(dataset: fo.Dataset, fields: RunFields, classes: Sequence[str]) -> None:
    """The per-class IoU group of the sidebar in taxonomy order (FiftyOne lists dynamic attributes alphabetically)."""
    config = dataset.app_config
    groups = config.sidebar_groups or fo.DatasetAppConfig.default_sidebar_groups(dataset)
    wanted = [f"{fields.iou}.{class_key(name)}" for name in classes]
    held = False
    for group in groups:
        if set(wanted) & set(group.paths):
            group.paths = [p for p in wanted if p in group.paths] + [p for p in group.paths if p not in wanted]
            held = True
    if not held:  # a rerun: the saved groups predate these fields, and FiftyOne would leave them ungrouped, unordered
        present = [p for p in wanted if dataset.get_field(p) is not None]
        groups.append(fo.SidebarGroupDocument(name=fields.iou, paths=present))
    config.sidebar_groups = groups
    dataset.save()


def colonies_to_polylines(colonies: Sequence[Colony], classes: Sequence[str], width: int, height: int) -> fo.Polylines:
    """Predicted colonies as closed polylines in FiftyOne's normalized coordinates, drawn as outlines.

    `filled=False` only changes how the App draws them (the ground truth is filled): FiftyOne's colony
    matching fills every prediction when the ground truth is filled, so IoUs are those of the polygons.
    """
    return fo.Polylines.from_dict(colonies_document(colonies, classes, width, height))


def colonies_document(colonies: Sequence[Colony], classes: Sequence[str], width: int, height: int) -> dict[str, Any]:
    """`colonies_to_polylines` in FiftyOne's stored form (what its `to_dict()` gives), built without Label objects:
    creating, validating and serializing a thousand `Polyline`s per photo took half the model's time (bench_predict)."""
    return {
        "_cls": "Polylines",
        "polylines": [
            {
                "_id": ObjectId(),
                "_cls": "Polyline",
                "attributes": {},
                "tags": [],
                "label": classes[c.class_index],
                "points": points,
                CONFIDENCE: round(c.confidence, 4),
                "closed": True,
                "filled": False,
            }
            for c, points in zip(colonies, polygons_to_fiftyone_points([c.polygon for c in colonies], width, height))
        ],
    }


def set_label_documents(dataset: fo.Dataset, name: str, kind: type[fo.Label], documents: Mapping[str, Any]) -> None:
    """Labels in FiftyOne's stored form (`kind.to_dict()`'s, built by us) onto the samples of the given ids, in one
    bulk write. The field is declared as `kind` first, so FiftyOne's per-label validation can be skipped."""
    if not dataset.has_sample_field(name):
        dataset.add_sample_field(name, fof.EmbeddedDocumentField, embedded_doc_type=kind)
    dataset.set_values(name, documents, key_field="id", expand_schema=False, validate=False)


def gt_colonies(polylines: fo.Polylines | None, taxonomy: Taxonomy, classes: Sequence[str]) -> fo.Polylines:
    """Ground-truth polylines relabelled to the taxonomy's classes, so colonies are matched class by class.

    They stay filled (drawn filled; FiftyOne matches filled polylines by polygon IoU). Dropped labels and labels
    the taxonomy does not know are left out, as prepare leaves them out of the masks.
    """
    kept = []
    for polyline in polylines.polylines if polylines is not None else []:
        index = taxonomy.label_to_class.get(polyline.label or "")
        if index is None or polyline.label in taxonomy.dropped:
            continue
        copy = polyline.copy()
        copy.label = classes[index]
        copy["source_label"] = polyline.label
        kept.append(copy)
    return fo.Polylines(polylines=kept)


def image_scores_document(iou: np.ndarray, classes: Sequence[str]) -> fo.DynamicEmbeddedDocument:
    """Per-class IoU of one image as an embedded document (attributes named `class_key(class)`)."""
    return fo.DynamicEmbeddedDocument(
        **{class_key(name): None if np.isnan(v) else float(v) for name, v in zip(classes, iou)}
    )


def write_sample(
    sample: fo.Sample,
    fields: RunFields,
    taxonomy_name: str,
    prediction_path: Path,
    colonies: fo.Polylines,
    gt_mask_path: Path | None = None,
    gt_polylines: fo.Polylines | None = None,
    miou: float | None = None,
    iou: fo.DynamicEmbeddedDocument | None = None,
) -> None:
    """Set one sample's fields for this run (and its ground truth, when it has some) and save it.

    The ground-truth fields are shared by the runs of a taxonomy and written only where missing,
    so another run's colony matches (which point at their ids) stay valid.
    """
    sample[fields.prediction] = fo.Segmentation(mask_path=str(prediction_path))
    sample[fields.colonies] = colonies
    if gt_mask_path is not None:
        for name, value in (
            (gt_segmentation_field(taxonomy_name), fo.Segmentation(mask_path=str(gt_mask_path))),
            (gt_colonies_field(taxonomy_name), gt_polylines),
        ):
            if not sample.has_field(name) or sample[name] is None:
                sample[name] = value
        sample[fields.miou] = miou
        sample[fields.iou] = iou
    sample.save()


def run_fiftyone_evaluations(
    dataset: fo.Dataset,
    sample_ids: Sequence[str],
    fields: RunFields,
    taxonomy: str,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
) -> tuple[np.ndarray, dict[str, ColonyCounts]]:
    """FiftyOne's own pixel and colony evaluations of the scored samples, under this run's eval keys.

    Registered so the App's Model Evaluation panel shows what metrics.json says: our metrics as custom
    metrics (`evaluate.panel_metrics`), background a class like any other (FiftyOne would make it the
    `missing` label and leave it out of accuracy), every class of the taxonomy in taxonomy order.
    Returns FiftyOne's pixel confusion matrix (for the cross-check against `models.metrics`) and the
    colony counts per class. Colonies are matched class by class at polygon IoU >= `COLONY_IOU`.
    """
    dataset.add_dynamic_sample_fields()  # so the App can filter on the per-class IoU attributes
    view = dataset.select(sample_ids)
    gt_mask = gt_segmentation_field(taxonomy)
    targets = rgb_mask_targets(classes, palette)
    with metrics_plugin():
        pixels = view.evaluate_segmentations(
            fields.prediction, gt_field=gt_mask, eval_key=fields.eval_key, mask_targets=targets, progress=False
        )
        in_taxonomy_order(pixels, classes)
        pixels.add_custom_metrics(SEGMENTATION_METRICS)  # after the reordering: their rows follow the taxonomy
    check_custom_metrics(pixels, fields.eval_key)
    coral = [name for name in classes if name != BACKGROUND_NAME]
    colonies = evaluate_colonies(view, fields.colonies, gt_colonies_field(taxonomy), fields.colony_eval_key, coral)
    return pixels.confusion_matrix(classes=list(classes)), colony_counts(
        colonies.ytrue, colonies.ypred, colonies.missing, classes
    )


def check_custom_metrics(results: Any, eval_key: str) -> None:
    """A panel without our numbers is an error here (FiftyOne only logs a custom metric that fails)."""
    missing = missing_metrics(results)
    if missing:
        raise UserError(
            f"FiftyOne did not compute the custom metrics {', '.join(missing)} of evaluation {eval_key!r} from the plugin "
            f"folder {PLUGINS_DIR}; FiftyOne's warning above names the cause (restore the folder from git if it is damaged)"
        )


def in_taxonomy_order(results: Any, classes: Sequence[str]) -> None:
    """Registered segmentation results with the taxonomy's classes in its order and background as a class.

    FiftyOne sorts the classes by mask value (RGB colour) and calls the class of value 0 `missing`, which
    its accuracy, precision and recall leave out; our metrics count background pixels like any class's
    (and leave background out of the coral means only, which the custom metrics do). Reordering the
    classes with the pixel matrix changes no count; the results are saved again under their eval key.
    """
    order = [str(c) for c in results.classes]
    index = [order.index(name) for name in classes]
    results.pixel_confusion_matrix = np.asarray(results.pixel_confusion_matrix)[np.ix_(index, index)]
    results.classes = np.asarray(list(classes))
    results.missing = NO_LABEL
    results.save()


def evaluate_colonies(
    view: fo.DatasetView, pred_field: str, gt_field: str, eval_key: str, classes: Sequence[str] | None = None
) -> Any:
    """`view.evaluate_detections(pred_field, gt_field, eval_key, iou=COLONY_IOU, classwise=True)`, saved in bulk.

    `classes` (the taxonomy's coral classes, in order) are the results' classes, so the panel's colony
    confusion matrix has a row for each, found or not (FiftyOne would list only the labels it saw).

    The same FiftyOne evaluation method matches the colonies and registers the run and its results;
    only the saving differs. `evaluate_detections` saves each sample through mongoengine, whose
    change tracking is quadratic in the labels of a field: a 1920-px quadrat with 400 predicted
    colonies took 16 s to save, with 900 over a minute. Here every label's result attributes and
    each sample's tp/fp/fn counts are written with one `set_label_values`/`set_values` per field.
    """
    from fiftyone.utils.eval.coco import COCOEvaluationConfig

    method = COCOEvaluationConfig(pred_field, gt_field, iou=COLONY_IOU, classwise=True).build()
    method.ensure_requirements()
    method.register_run(view, eval_key)
    method.register_samples(view, eval_key)
    keys = (eval_key, f"{eval_key}_id", f"{eval_key}_iou")
    label_values: dict[str, list[dict[str, Any]]] = {
        f"{field}.polylines.{key}": [] for field in (pred_field, gt_field) for key in keys
    }
    sample_counts: dict[str, dict[str, int]] = {f"{eval_key}_{kind}": {} for kind in ("tp", "fp", "fn")}
    matches: list[Any] = []
    for sample in view.select_fields([gt_field, pred_field]).iter_samples(autosave=False):
        matches += method.evaluate(sample, eval_key=eval_key)
        outcomes: Counter[tuple[str, str]] = Counter()
        for field in (pred_field, gt_field):
            for label in sample[field].polylines if sample[field] is not None else []:
                outcomes[field, label[eval_key]] += 1
                for key in keys:
                    label_values[f"{field}.polylines.{key}"].append(
                        {"sample_id": sample.id, "label_id": label.id, "value": label[key]}
                    )
        for kind, field in (("tp", pred_field), ("fp", pred_field), ("fn", gt_field)):
            sample_counts[f"{eval_key}_{kind}"][sample.id] = outcomes[field, kind]
    for path, values in label_values.items():
        if values:
            view.set_label_values(path, values)
    for name, counts in sample_counts.items():
        view.set_values(name, counts, key_field="id")
    results = method.generate_results(
        view, matches, eval_key=eval_key, classes=None if classes is None else list(classes)
    )
    method.save_run_results(view, eval_key, results)
    method.add_fields_to_sidebar_group(view, eval_key, omit_fields=(pred_field, gt_field))
    return results


def colony_counts(
    ytrue: Sequence[str], ypred: Sequence[str], missing: str, classes: Sequence[str]
) -> dict[str, ColonyCounts]:
    """TP / FP / FN per class from FiftyOne's matched (ground truth, prediction) label pairs."""
    tp, fp, fn = Counter[str](), Counter[str](), Counter[str]()
    for truth, predicted in zip(ytrue, ypred):
        if truth == missing:
            fp[predicted] += 1
        elif predicted == missing:
            fn[truth] += 1
        else:
            tp[truth] += 1
    return {name: ColonyCounts(tp[name], fp[name], fn[name]) for name in classes if tp[name] + fp[name] + fn[name]}


@dataclass(frozen=True)
class ReviewView:
    """A saved view `save_review_views` made: its name, what it shows, and how many samples it holds."""

    name: str
    description: str
    samples: int


def save_review_views(
    dataset: fo.Dataset, sample_ids: Sequence[str], fields: RunFields, taxonomy: str, classes: Sequence[str]
) -> list[ReviewView]:
    """The run's review views, one click each in the App's saved-view menu (docs/evaluation.md).

    `worst_first_<key>`: scored samples by per-image mIoU, worst first. `missed_<key>` / `invented_<key>`: samples
    with ground-truth colonies no prediction matched (FiftyOne's colony evaluation `fn`) / predicted colonies
    matching no ground truth (`fp`), only those colonies kept, most first; `missed_<key>__<class>` /
    `invented_<key>__<class>` the same for each class that has any. Saved views cannot carry the App's field
    visibility, so each view selects only the fields it needs: the colonies it is about (switched on by
    `configure_app`), both masks (off, one click away) and the scores.
    """
    gt_mask, gt = gt_segmentation_field(taxonomy), gt_colonies_field(taxonomy)
    key = fields.colony_eval_key
    scored = dataset.select(sample_ids)
    scores = [fields.miou, fields.iou] + [f"{key}_{k}" for k in ("tp", "fp", "fn")]
    scores = [name for name in scores if dataset.has_sample_field(name)]
    views = [
        (
            fields.worst_first,
            "samples sorted by per-image mIoU, worst first",
            scored.match(F(fields.miou) != None)  # noqa: E711 (a FiftyOne expression)
            .sort_by(fields.miou)
            .select_fields([fields.prediction, gt_mask, fields.colonies, gt, *scores]),
        )
    ]
    kinds = (
        (gt, "fn", fields.missed, fields.missed_class, "missed {}colonies (ground truth no prediction matched)"),
        (fields.colonies, "fp", fields.invented, fields.invented_class, "invented {}colonies (predictions matching no ground truth)"),
    )  # fmt: skip
    for field, outcome, name, class_name, text in kinds:
        errors = F(key) == outcome
        shown = [fields.prediction, gt_mask, field, *scores]
        views.append((name, text.format("") + ", most first", _errors_first(scored, field, errors, shown)))
        present = set(scored.filter_labels(field, errors).distinct(f"{field}.polylines.label"))
        for cls in (c for c in classes if c in present):
            view = _errors_first(scored, field, errors & (F("label") == cls), shown)
            views.append((class_name(cls), text.format(cls + " ") + ", most first", view))
    made = []
    for name, description, view in views:
        dataset.save_view(name, view, description=description, overwrite=True)
        made.append(ReviewView(name, description, len(view)))
    return made


def save_review_workspace(dataset: fo.Dataset, fields: RunFields) -> None:
    """The run's App workspace: the samples grid, and beside it FiftyOne's Model Evaluation panel, whose confusion
    matrices then show every class (opened as a tab, it leaves out those with no correct pixel or colony)."""
    grid = fo.Panel(type="Samples", pinned=True)
    panel = evaluation_panel(dataset, [fields.eval_key, fields.colony_eval_key])
    dataset.save_workspace(
        fields.workspace,
        fo.Space(children=[grid, panel], active_child=grid.component_id),
        description="the samples grid and the Model Evaluation panel with every class in its confusion matrices",
        overwrite=True,
    )


def _errors_first(scored: fo.DatasetView, field: str, errors: Any, shown: Sequence[str]) -> fo.DatasetView:
    """The samples with labels of `field` matching `errors`, only those labels kept, the most first."""
    return (
        scored.filter_labels(field, errors)
        .sort_by(F(f"{field}.polylines").length(), reverse=True)
        .select_fields(list(shown))
    )


def sample_ids_for_split(dataset: fo.Dataset, split: str, prepared_split: Mapping[str, str]) -> list[str]:
    """The split's samples: those the prepared folder puts in it, plus samples tagged with it that were never prepared."""
    ids = dataset.values("id")
    if split == "all":
        return ids
    tags = dataset.values("tags")
    return [
        i
        for i, t in zip(ids, tags)
        if prepared_split.get(i) == split or (i not in prepared_split and split in (t or []))
    ]


def app_url(address: str, port: int, dataset: str, view: str | None = None) -> str:
    """The page of a dataset (and saved view) in the App; 0.0.0.0 is shown as localhost."""
    host = "localhost" if address in ("0.0.0.0", "") else address
    url = f"http://{host}:{port}/datasets/{dataset}"
    return url + (f"?view={fou.to_slug(view)}" if view else "")


def launch_app(
    dataset: fo.Dataset, address: str, port: int, view: str | None = None, workspace: str | None = None
) -> fo.Session:
    """The App in remote mode (no browser opened here), on the dataset or one of its saved views, in a saved workspace."""
    shown = dataset.load_saved_view(view) if view else dataset
    spaces = dataset.load_workspace(workspace) if workspace else None
    return fo.launch_app(shown, spaces=spaces, remote=True, address=address, port=port)
