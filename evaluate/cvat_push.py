"""Predictions into a CVAT task for correction: every predicted colony becomes an automatic polygon.

The model and the colony -> shape conversion are the auto-annotation function's (`evaluate.cvat_function`,
`evaluate.cvat_shapes`); this module adds what a push needs beyond `cvat-cli task auto-annotate`:
taxonomy aliases for label names, the `confidence` attribute where a label has it, `--replace` of
earlier automatic shapes only, `--dry-run`, and a frame-size check.

The shapes carry the task's own label ids, `source: "auto"` and, where the label defines it, the
`confidence` attribute as CVAT stores numbers (an integer string, 0-100). Shapes people drew
(`source: "manual"`) are never changed; `--replace` removes only earlier automatic ones.
The connection and error translation are data_engineering's CVAT adapter.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from common.cli import UserError
from common.progress import progress
from common.settings import Settings
from common.table import format_table
from data_engineering.cvat_client import CvatLabel, connect, translate_errors
from evaluate.colonies import Colony
from evaluate.cvat_function import ColonyDetector, DetectorOptions, decode_frame
from evaluate.cvat_shapes import colony_shape, confidence_value
from evaluate.fields import CONFIDENCE
from prepare.layout import BACKGROUND_NAME
from prepare.taxonomy import BUILTIN_DIR, Taxonomy, load_taxonomy

AUTO = "auto"
ALREADY_ANNOTATED = "already hold automatic shapes; nothing sent"


@dataclass(frozen=True)
class PushOptions:
    run_dir: Path
    task_id: int
    replace: bool = False
    dry_run: bool = False
    which: str = "best"
    batch_size: int = 4
    tta: bool = False
    precision: str = "auto"
    device: str = "auto"
    weights: str | None = None  # the backbone weights the run was trained on; None: a random backbone
    taxonomy_dirs: tuple[Path, ...] = (BUILTIN_DIR,)
    frames: range | None = None  # only these frame numbers (a job's), else every frame of the task
    once: bool = False  # send nothing when the frames already hold automatic shapes (the webhook, on a reopened job)


def detector_options(options: PushOptions) -> DetectorOptions:
    """The push's run, checkpoint and prediction settings as the detector's complete options."""
    return DetectorOptions(
        options.run_dir, options.which, options.precision, options.batch_size, options.tta,
        options.device, options.weights, options.taxonomy_dirs,
    )  # fmt: skip


def labels_for_classes(
    classes: Sequence[str], task_labels: Sequence[CvatLabel], taxonomy: Taxonomy, task_id: int
) -> dict[int, CvatLabel]:
    """Class index -> the task's label for it: the label named like the class, else one of the class's raw labels (aliases).

    Background has no label. A class the task cannot hold is an error naming every such class.
    """
    by_name = {label.name: label for label in task_labels}
    found, missing = {}, []
    for index, name in enumerate(classes):
        if name == BACKGROUND_NAME:
            continue
        aliases = sorted(
            raw for raw, i in taxonomy.label_to_class.items() if taxonomy.classes[i - 1] == name and raw != name
        )
        match = next((by_name[n] for n in [name, *aliases] if n in by_name), None)
        if match is None:
            missing.append(name)
        else:
            found[index] = match
    if missing:
        raise UserError(
            f"CVAT task {task_id} has no label for the run's classes {', '.join(missing)} (its labels: {', '.join(sorted(by_name)) or 'none'}); "
            "add them to the task's project in CVAT"
        )
    return found


def colony_shapes(
    colonies: Sequence[Colony], frame: int, labels: dict[int, CvatLabel], width: int, height: int
) -> list[dict[str, Any]]:
    """CVAT 2.x polygon shapes (flat pixel points) for one frame's colonies, converted as the auto-annotation function does."""
    shapes = []
    for colony in colonies:
        label = labels[colony.class_index]
        shape = colony_shape(colony, width, height)
        spec_id = next((spec for spec, name in label.attributes.items() if name == CONFIDENCE), None)
        attributes = [] if spec_id is None else [{"spec_id": spec_id, "value": confidence_value(colony)}]
        shapes.append(
            {
                "type": shape.type,
                "frame": frame,
                "label_id": label.id,
                "points": shape.points,
                "source": AUTO,
                "attributes": attributes,
                "occluded": False,
                "z_order": 0,
                "group": 0,
            }  # fmt: skip
        )
    return shapes


def push_predictions(
    settings: Settings, options: PushOptions, out: TextIO = sys.stdout, detector: ColonyDetector | None = None
) -> dict[str, int]:
    """Predict every frame of the task (or `options.frames`) and send the colonies; returns shape counts per label name.

    `settings` says only how to reach CVAT (URL, credentials); everything else is in the complete `options`.
    `detector` is a run already loaded (the webhook service keeps one); by default the options' run is loaded.
    """
    from cvat_sdk.api_client import models
    from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction

    if detector is None:
        detector = ColonyDetector(detector_options(options))
    spec = detector.spec
    taxonomy = load_taxonomy(spec.taxonomy, list(options.taxonomy_dirs))
    with connect(settings) as cvat:
        with translate_errors(cvat.url, f"reading task {options.task_id}"):
            task = cvat.client.tasks.retrieve(options.task_id)
            task_labels = [CvatLabel(lb.id, lb.name, {a.id: a.name for a in lb.attributes}) for lb in task.get_labels()]
            meta = task.get_meta()
            existing = task.get_annotations().shapes
        labels = labels_for_classes(spec.classes, task_labels, taxonomy, options.task_id)
        without = sorted({lb.name for lb in labels.values() if CONFIDENCE not in lb.attributes.values()})
        if without:
            print(f"labels without a `{CONFIDENCE}` attribute get no confidence: {', '.join(without)}", file=out)
        selected = options.frames if options.frames is not None else range(len(meta.frames))
        earlier_auto = [s.id for s in existing if str(getattr(s, "source", "") or "") == AUTO and s.frame in selected]
        if earlier_auto and options.once:
            print(
                f"frames {selected.start}-{selected.stop - 1} of task {options.task_id} {ALREADY_ANNOTATED}", file=out
            )
            return {}
        if earlier_auto and options.replace and not options.dry_run:
            with translate_errors(cvat.url, f"removing earlier automatic shapes of task {options.task_id}"):
                task.remove_annotations(ids=earlier_auto)
        counts: Counter[str] = Counter()
        example = None
        deleted = set(meta.deleted_frames or [])
        frames = [
            (number, frame) for number, frame in enumerate(meta.frames) if number not in deleted and number in selected
        ]
        for number, frame in progress(frames, desc=f"predict task {options.task_id}", unit="frame", file=out):
            with translate_errors(cvat.url, f"downloading frame {number} of task {options.task_id}"):
                data = task.get_frame(number, quality="original").read()
            image = decode_frame(data, frame.name)
            if image.shape[:2] != (frame.height, frame.width):
                raise UserError(
                    f"CVAT frame {frame.name} decodes to {image.shape[1]}x{image.shape[0]} but the task records {frame.width}x{frame.height}; the polygons would land off the image"
                )
            shapes = colony_shapes(detector.colonies(image), number, labels, frame.width, frame.height)
            counts.update(next(lb.name for lb in labels.values() if lb.id == s["label_id"]) for s in shapes)
            example = example or (shapes[0] if shapes else None)
            if shapes and not options.dry_run:
                request = models.PatchedLabeledDataRequest(
                    shapes=[
                        models.LabeledShapeRequest(
                            **{**s, "attributes": [models.AttributeValRequest(**a) for a in s["attributes"]]}
                        )
                        for s in shapes
                    ]
                )
                with translate_errors(cvat.url, f"sending the shapes of frame {number} to task {options.task_id}"):
                    task.update_annotations(request, action=AnnotationUpdateAction.CREATE)
    _summary(options, counts, len(frames), earlier_auto, example, out)
    return dict(counts)


def _summary(
    options: PushOptions, counts: Counter[str], frames: int, earlier_auto: list[int], example: dict | None, out: TextIO
) -> None:
    print(format_table(["label", "automatic polygons"], sorted(counts.items())), file=out)
    done = "would send" if options.dry_run else "sent"
    print(f"{done} {sum(counts.values())} polygons over {frames} frames to CVAT task {options.task_id}", file=out)
    if earlier_auto:
        if options.replace:
            print(
                f"{'would remove' if options.dry_run else 'removed'} {len(earlier_auto)} earlier automatic shapes (shapes people drew are kept)",
                file=out,
            )
        else:
            print(
                f"the task already had {len(earlier_auto)} automatic shapes; they stay (--replace removes them)",
                file=out,
            )
    if options.dry_run and example is not None:
        print(
            "example shape: "
            + json.dumps({**example, "points": [round(v, 1) for v in example["points"][:8]] + ["..."]}),
            file=out,
        )
