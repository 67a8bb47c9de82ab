"""Our metrics in FiftyOne's Model Evaluation panel, as FiftyOne custom evaluation metrics.

FiftyOne 1.x evaluations take `custom_metrics`: URIs of `EvaluationMetric` operators, which FiftyOne computes
after the evaluation and stores in the results (`results.custom_metrics`, `{uri: {key, value, label,
lower_is_better}}`); the panel's summary shows one row per entry, and `results.metrics()` returns them by key.
FiftyOne finds operators only through plugins in one folder, `fo.config.plugins_dir` (FIFTYONE_PLUGINS_DIR):
ours is the plugin `@reefseg/metrics` in `evaluate/fiftyone_plugins/reefseg_metrics/`, whose entry file
registers the operators defined here. `metrics_plugin()` points FiftyOne at that folder while an evaluation
is computed or deleted; the App needs no plugin to show the stored values.

Every value is computed by `models.metrics.compute_metrics` from the evaluation's own pixel confusion matrix,
with the background class (`prepare.layout.BACKGROUND_NAME`) left out of the coral means exactly as in
`metrics.json`. The per-class IoU rows are written by the `class_iou` operator, one entry per class (key
`iou_<class key>`, in taxonomy order), since FiftyOne stores a single value per operator.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import common.settings  # noqa: F401  (exports .env's FIFTYONE_* keys before fiftyone is imported)

# isort: split
import fiftyone as fo
import numpy as np
from fiftyone.operators import EvaluationMetric, EvaluationMetricConfig

from evaluate.fields import class_key
from models.metrics import SegmentationMetrics, compute_metrics
from prepare.layout import BACKGROUND_NAME

PLUGIN_NAME = "@reefseg/metrics"
PLUGINS_DIR = Path(__file__).resolve().parent / "fiftyone_plugins"
CLASS_IOU_PREFIX = "iou_"  # + class_key(class): the key of a class's IoU row in results.custom_metrics / metrics()


def segmentation_metrics(results: Any) -> SegmentationMetrics:
    """`models.metrics` on a FiftyOne segmentation evaluation: its pixel confusion matrix (rows ground truth)."""
    classes = [str(c) for c in results.classes]
    background = classes.index(BACKGROUND_NAME) if BACKGROUND_NAME in classes else None
    return compute_metrics(np.asarray(results.pixel_confusion_matrix), classes, background)


def shown_value(value: float | None) -> float | str | None:
    """A metric as the panel gets it: None where undefined (the panel hides the row), "0" for zero.

    FiftyOne 1.22's panel draws any falsy value as "—", the sign of a missing one; an IoU of exactly 0
    (a class all missed, e.g. Astreopora on the demo) is stored as the string "0", which it draws as 0.
    """
    if value is None or np.isnan(value):
        return None
    return "0" if value == 0 else float(value)


class _SummaryMetric(EvaluationMetric):
    """One scalar of `SegmentationMetrics.summary()`, under the same key as in metrics.json's `summary`."""

    key = ""
    label = ""
    description = ""

    @property
    def config(self) -> EvaluationMetricConfig:
        return EvaluationMetricConfig(
            name=self.key,
            label=self.label,
            description=self.description,
            eval_types=["segmentation"],
            lower_is_better=False,
            unlisted=True,
        )

    def compute(self, samples: Any, results: Any, **kwargs: Any) -> float | str | None:
        return shown_value(segmentation_metrics(results).summary()[self.key])


class MeanIoU(_SummaryMetric):
    key, label, description = "miou", "mIoU", "mean IoU over the coral classes (background left out), as metrics.json"


class MeanIoUWithBackground(_SummaryMetric):
    key, label, description = "miou_with_background", "mIoU with background", "mean IoU over every class"


class FrequencyWeightedIoU(_SummaryMetric):
    key, label, description = "fwiou", "fwIoU", "IoU weighted by ground-truth pixel frequency"


class MeanDice(_SummaryMetric):
    key, label, description = "mdice", "mDice", "mean Dice (F1) over the coral classes"


class PixelAccuracy(_SummaryMetric):
    key, label, description = (
        "pixel_accuracy",
        "Pixel accuracy",
        "correct pixels over counted pixels, background included",
    )


class ClassIoU(EvaluationMetric):
    """Writes one `IoU <class>` row per class into the results (FiftyOne keeps one value per operator)."""

    @property
    def config(self) -> EvaluationMetricConfig:
        return EvaluationMetricConfig(
            name="class_iou",
            label="IoU per class",
            description="IoU of each class, one row per class in taxonomy order",
            eval_types=["segmentation"],
            lower_is_better=False,
            unlisted=True,
        )

    def compute(self, samples: Any, results: Any, **kwargs: Any) -> None:
        metrics = segmentation_metrics(results)
        rows = dict(results.custom_metrics or {})
        for name, iou in zip(metrics.class_names, metrics.iou):
            key = CLASS_IOU_PREFIX + class_key(name)
            rows[f"{self.uri}/{key}"] = {
                "key": key,
                "value": shown_value(iou),
                "label": f"IoU {name}",
                "lower_is_better": False,
            }
        results.custom_metrics = rows
        return None  # the rows are the result; FiftyOne stores no aggregate for a None


OPERATORS: tuple[type[EvaluationMetric], ...] = (
    MeanIoU,
    MeanIoUWithBackground,
    FrequencyWeightedIoU,
    MeanDice,
    PixelAccuracy,
    ClassIoU,
)
SEGMENTATION_METRICS = [f"{PLUGIN_NAME}/{cls().name}" for cls in OPERATORS]  # the URIs, in panel row order


def missing_metrics(results: Any) -> list[str]:
    """The operators with no value in the results (FiftyOne logs a failing custom metric and carries on)."""
    stored = results.custom_metrics or {}
    return [uri for uri in SEGMENTATION_METRICS if not any(key == uri or key.startswith(uri + "/") for key in stored)]


# FiftyOne 1.22's Model Evaluation panel (plugins/panels/model_evaluation) keeps each evaluation's confusion-matrix
# options in its panel state under "<evaluation id>_cmc"; the App reads `skipZeroCount` there (default on: classes with
# no correct pixel or colony are left out of the plot) and offers no switch for it. The panel's defaults, that one off:
EVALUATION_PANEL = "model_evaluation_panel_builtin"
EVERY_CLASS = {"sortBy": "default", "limit": 100, "log": True, "skipZeroCount": False}


def confusion_matrix_state_key(dataset: fo.Dataset, eval_key: str) -> str:
    """The panel-state key of an evaluation's confusion-matrix options (the panel names evaluations by their id)."""
    return f"{dataset._doc.evaluations[eval_key].id}_cmc"


def evaluation_panel(dataset: fo.Dataset, eval_keys: list[str]) -> fo.Panel:
    """FiftyOne's Model Evaluation panel whose confusion matrices show every class of these evaluations."""
    state = {confusion_matrix_state_key(dataset, key): dict(EVERY_CLASS) for key in eval_keys}
    return fo.Panel(type=EVALUATION_PANEL, state=state)


def register(plugin: Any) -> None:
    """The plugin entry point (evaluate/fiftyone_plugins/reefseg_metrics/__init__.py calls it)."""
    for operator in OPERATORS:
        plugin.register(operator)


@contextlib.contextmanager
def metrics_plugin() -> Iterator[None]:
    """FiftyOne looks for operators in `fo.config.plugins_dir` only: point it at ours for the enclosed calls."""
    previous = fo.config.plugins_dir
    fo.config.plugins_dir = str(PLUGINS_DIR)
    try:
        yield
    finally:
        fo.config.plugins_dir = previous
