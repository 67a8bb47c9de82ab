"""Names of everything `evaluate` writes into a FiftyOne dataset: the single source of truth.

Every run gets its own fields, named from a key derived from the run folder's name, so several
runs live side by side and `--delete` removes exactly one run's. Documented for people in
docs/evaluation.md; change both together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

INFO_EVALUATIONS = "reefseg_evaluations"  # dataset.info key: {eval key: {"run": run folder, "split": ...}}
GT_SEGMENTATION_PREFIX = (
    "gt_mask_"  # + taxonomy key: ground truth as fo.Segmentation, shared by the runs of that taxonomy
)
GT_COLONIES_PREFIX = "gt_colonies_"  # + taxonomy key: ground-truth polylines relabelled to the taxonomy's classes
WORST_FIRST_PREFIX = "worst_first_"  # + run key: saved view, split sorted by per-sample mIoU, worst first
MISSED_PREFIX = "missed_"  # + run key [+ "__" + class key]: saved view, ground-truth colonies the run missed
INVENTED_PREFIX = "invented_"  # + run key [+ "__" + class key]: saved view, predicted colonies with no ground truth
REVIEW_WORKSPACE_PREFIX = "review_"  # + run key: saved App workspace, the grid beside the Model Evaluation panel
COLONY_IOU = 0.5  # polygon IoU a predicted colony needs with a ground-truth colony of its class to count as found
CONFIDENCE = "confidence"  # on each predicted colony: mean probability of its class over its pixels


def field_key(name: str, digit_prefix: str = "run_") -> str:
    """A name as a FiftyOne field-name fragment: lower case, `[a-z0-9_]`, `digit_prefix` before a leading digit."""
    key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not key:
        raise ValueError(f"{name!r} has no letter or digit to name FiftyOne fields after")
    return f"{digit_prefix}{key}" if key[0].isdigit() else key


def class_key(name: str) -> str:
    """A class name as the attribute of the per-class IoU document, case kept (`Pavona/Leptoseris` -> `Pavona_Leptoseris`).

    The App's sidebar shows the attribute name, so it stays as close to the class's display name as a field name can.
    """
    key = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
    if not key:
        raise ValueError(f"{name!r} has no letter or digit to name FiftyOne fields after")
    return f"class_{key}" if key[0].isdigit() else key


def gt_segmentation_field(taxonomy: str) -> str:
    """The ground-truth mask field of a taxonomy (masks by path from the prepared folder)."""
    return GT_SEGMENTATION_PREFIX + field_key(taxonomy)


def gt_colonies_field(taxonomy: str) -> str:
    """The ground-truth polylines of a taxonomy, labelled with its class names (the colony matching target)."""
    return GT_COLONIES_PREFIX + field_key(taxonomy)


@dataclass(frozen=True)
class RunFields:
    """The fields, eval keys and saved view of one run (`RunFields.for_run("linear_reef")`)."""

    key: str

    @classmethod
    def for_run(cls, run_name: str) -> RunFields:
        return cls(field_key(run_name))

    @property
    def prediction(self) -> str:
        """fo.Segmentation: the predicted mask (palette PNG under the run, by path)."""
        return f"pred_{self.key}"

    @property
    def colonies(self) -> str:
        """fo.Polylines: predicted colonies, one closed polygon per connected region (drawn as an outline), with confidence."""
        return f"pred_{self.key}_colonies"

    @property
    def mean_confidence(self) -> str:
        """Float per sample (predict.py): mean probability of the winning class over the image's pixels."""
        return f"pred_{self.key}_confidence"

    @property
    def uncertain_share(self) -> str:
        """Float per sample (predict.py): share of pixels whose winning class is below the doubt threshold."""
        return f"pred_{self.key}_uncertain"

    @property
    def eval_key(self) -> str:
        """FiftyOne segmentation evaluation; FiftyOne adds `<eval_key>_accuracy|precision|recall` per sample."""
        return f"eval_{self.key}"

    @property
    def colony_eval_key(self) -> str:
        """FiftyOne detection evaluation of the colonies against the ground-truth polylines (per class).

        FiftyOne adds `<key>_tp|fp|fn` per sample and, on every colony of both fields, `<key>` set to
        "tp", "fp" (invented) or "fn" (missed), with `<key>_id` and `<key>_iou` on matches.
        """
        return f"eval_{self.key}_colonies"

    @property
    def miou(self) -> str:
        """Float per sample: mIoU over the coral classes of that image (NaN-free classes only)."""
        return f"eval_{self.key}_miou"

    @property
    def iou(self) -> str:
        """Embedded document per sample: IoU of each class (attribute `class_key(class name)`), None where undefined."""
        return f"eval_{self.key}_iou"

    @property
    def worst_first(self) -> str:
        """Saved view: the evaluated split sorted by `miou`, worst first."""
        return WORST_FIRST_PREFIX + self.key

    @property
    def missed(self) -> str:
        """Saved view: samples with ground-truth colonies no prediction matched, only those colonies shown."""
        return MISSED_PREFIX + self.key

    @property
    def invented(self) -> str:
        """Saved view: samples with predicted colonies that match no ground truth, only those colonies shown."""
        return INVENTED_PREFIX + self.key

    @property
    def workspace(self) -> str:
        """Saved App workspace: the samples grid and FiftyOne's Model Evaluation panel showing every class."""
        return REVIEW_WORKSPACE_PREFIX + self.key

    @property
    def app_arguments(self) -> str:
        """The flags of `evaluate/app.py` that open the run's review: worst images first, in its workspace."""
        return f"--view {self.worst_first} --workspace {self.workspace}"

    def missed_class(self, class_name: str) -> str:
        """Saved view `missed` of one class (`missed_<key>__Acropora`); `__` never occurs in a run key."""
        return f"{self.missed}__{class_key(class_name)}"

    def invented_class(self, class_name: str) -> str:
        return f"{self.invented}__{class_key(class_name)}"

    def owns_view(self, name: str) -> bool:
        """Whether a saved view name is one of this run's (worst first, missed / invented, overall or per class)."""
        return name == self.worst_first or any(
            name == v or name.startswith(v + "__") for v in (self.missed, self.invented)
        )

    @property
    def sample_fields(self) -> tuple[str, ...]:
        """Sample fields this module writes itself (FiftyOne's evaluations add and remove their own)."""
        return (self.prediction, self.colonies, self.miou, self.iou, self.mean_confidence, self.uncertain_share)
