"""A trained run as a cvat-sdk auto-annotation function, for a community CVAT:

    cvat-cli --server-host https://cvat.example.org --auth me task auto-annotate 42 \\
        --function-module evaluate.cvat_function -p run=str:runs/<name> [--conv-mask-to-poly] [--conf-threshold 0.5]

cvat-cli imports this module and calls `create(**params)` with the `-p name=type:value` parameters;
the object it returns has the `cvat_sdk.auto_annotation` detection interface: a `spec` declaring
one label per class of the run (background has none) and `detect(context, image)` returning the
image's colonies as shapes. CVAT matches the spec's labels to the task's by name (`labels=` renames
them); a label the task lacks stops the run with its name unless `--allow-unmatched-labels`.
Each colony is a `mask` with its holes, or a `polygon` when the caller asks for polygons
(`--conv-mask-to-poly`) or `shape=str:polygon`; only colonies whose mean confidence reaches
`--conf-threshold` are returned. The model, colonies and shapes are the ones `push_to_cvat.py`
sends (`ColonyDetector`, `evaluate.cvat_shapes`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.cli import UserError
from common.images import decode_image
from common.runtime import check_precision, freeze_loaded_objects, resolve_runtime
from common.settings import Settings, load_settings
from evaluate.colonies import Colony, find_colonies
from evaluate.cvat_shapes import MASK, POLYGON, colony_shape, confidence_value, keep_confident
from evaluate.fields import CONFIDENCE
from evaluate.inference import predict_image, window_forward
from models.checkpoint import CheckpointSpec, load_checkpoint
from prepare.layout import BACKGROUND_NAME
from prepare.taxonomy import BUILTIN_DIR, taxonomy_dirs

SHAPES = (MASK, POLYGON)
CONFIDENCE_ATTRIBUTE_ID = 1  # the spec's own id; CVAT maps it to the task's attribute of the same name
CONFIDENCE_VALUES = ["0", "100", "1"]  # a number attribute 0..100 step 1, as reef projects define `confidence`


@dataclass(frozen=True)
class DetectorOptions:
    run_dir: Path
    which: str = "best"
    precision: str = "auto"
    batch_size: int = 4
    tta: bool = False
    device: str = "auto"
    weights: str | None = None  # the backbone weights the run was trained on; None: a random backbone
    taxonomy_dirs: tuple[Path, ...] = (BUILTIN_DIR,)


class ColonyDetector:
    """A run loaded once: an RGB image in, its colonies out (sliding windows at the run's window and stride)."""

    def __init__(self, options: DetectorOptions) -> None:
        check_precision(options.precision)
        if options.batch_size < 1:
            raise UserError(f"batch_size must be a positive number of windows, not {options.batch_size}")
        model, spec = load_checkpoint(options.run_dir, options.which, weights=options.weights)
        self.spec: CheckpointSpec = spec
        self.runtime = resolve_runtime(options.device, options.precision)
        self.device = self.runtime.device
        self.batch_size = options.batch_size
        self._forward = window_forward(model.to(self.device).eval(), self.runtime, options.tta)
        freeze_loaded_objects()  # a server answers for hours: no request pays a full pass over what was loaded

    @property
    def class_names(self) -> dict[int, str]:
        """Class index -> name, background left out (it is never a shape)."""
        return {i: name for i, name in enumerate(self.spec.classes) if name != BACKGROUND_NAME}

    def colonies(self, image: np.ndarray) -> list[Colony]:
        """The colonies of one `[H, W, 3]` uint8 RGB image."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise UserError(
                f"an image to annotate must be 8-bit RGB, not an array of shape {image.shape} and type {image.dtype}"
            )
        prediction = predict_image(
            self._forward,
            image,
            len(self.spec.classes),
            self.spec.window,
            self.spec.window_stride,
            self.batch_size,
            self.device,
        )
        return find_colonies(prediction.mask, prediction.confidence)


def decode_frame(data: bytes, name: str) -> np.ndarray:
    """A frame's file bytes as `[H, W, 3]` uint8 RGB, orientation as stored (as CVAT and prepare use it)."""
    return decode_image(data, f"CVAT frame {name}")


def parse_label_names(text: str, classes: Sequence[str]) -> dict[str, str]:
    """`"Acropora=acro,Porites=Porites massive"` -> {class: CVAT label name}; a name that is no class of the run is an error."""
    renames: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, label = (s.strip() for s in item.partition("="))
        if not sep or not name or not label:
            raise UserError(
                f"labels must be class=CVAT label pairs separated by commas, like Acropora=acro; {item!r} is not one"
            )
        if name not in classes or name == BACKGROUND_NAME:
            raise UserError(
                f"labels names {name!r}, which is not a class of the run (its classes: {', '.join(c for c in classes if c != BACKGROUND_NAME)})"
            )
        renames[name] = label
    return renames


class ReefFunction:
    """The `cvat_sdk.auto_annotation.DetectionFunction` of a loaded run (label ids in the spec are the class indices)."""

    def __init__(self, detector: ColonyDetector, label_names: dict[str, str] | None = None, shape: str = MASK,
                 confidence_attribute: bool = False) -> None:  # fmt: skip
        if shape not in SHAPES:
            raise UserError(f"shape must be {' or '.join(SHAPES)}, not {shape!r}")
        self.detector = detector
        self.shape = shape
        self.confidence_attribute = confidence_attribute
        renames = label_names or {}
        self.label_names = {i: renames.get(name, name) for i, name in detector.class_names.items()}
        if len(set(self.label_names.values())) != len(self.label_names):
            raise UserError(
                f"two classes would share one CVAT label: {', '.join(f'{detector.spec.classes[i]}={n}' for i, n in self.label_names.items())}"
            )

    @property
    def spec(self) -> Any:
        import cvat_sdk.auto_annotation as cvataa

        attributes = (
            [cvataa.number_attribute_spec(CONFIDENCE, CONFIDENCE_ATTRIBUTE_ID, CONFIDENCE_VALUES)]
            if self.confidence_attribute
            else []
        )
        return cvataa.DetectionFunctionSpec(
            labels=[
                cvataa.label_spec(name, index, type=self.shape, attributes=attributes)
                for index, name in self.label_names.items()
            ]
        )

    def detect(self, context: Any, image: Any) -> list[Any]:
        """Shapes of one frame, on the spec's label ids; masks unless the context or `shape` asks for polygons."""
        import cvat_sdk.auto_annotation as cvataa
        from cvat_sdk import models

        array = np.array(image.convert("RGB"))  # a writable copy: torch refuses read-only arrays
        colonies = keep_confident(self.detector.colonies(array), context.conf_threshold)
        as_mask = self.shape == MASK and not context.conv_mask_to_poly
        height, width = array.shape[:2]
        shapes = []
        for colony in colonies:
            shape = colony_shape(colony, width, height, as_mask=as_mask)
            attributes = (
                [models.AttributeValRequest(spec_id=CONFIDENCE_ATTRIBUTE_ID, value=confidence_value(colony))]
                if self.confidence_attribute
                else []
            )
            make = cvataa.mask if shape.type == MASK else cvataa.polygon
            shapes.append(make(shape.class_index, shape.points, score=shape.confidence, attributes=attributes))
        return shapes


def load_function(
    run: str, checkpoint: str = "best", precision: str = "auto", device: str = "", weights: str = "", batch_size: int = 4,
    tta: bool = False, labels: str = "", shape: str = MASK, confidence_attribute: bool = False, settings: Settings | None = None,
) -> ReefFunction:  # fmt: skip
    """The function for a run folder; settings (DEVICE, DINO_WEIGHTS, TAXONOMY_DIRS) from `.env` and the environment unless given.

    This is cvat-cli's entry point (`create`), the command-line boundary of the function module: the settings are
    read here once and the detector gets complete options.
    """
    settings = settings or load_settings(device=device or None)
    run_dir = Path(run).expanduser().resolve()
    options = DetectorOptions(
        run_dir, checkpoint, precision, int(batch_size), bool(tta), settings.device,
        weights or settings.dino_weights or None, tuple(taxonomy_dirs(settings.taxonomy_dirs)),
    )  # fmt: skip
    detector = ColonyDetector(options)
    return ReefFunction(detector, parse_label_names(labels, detector.spec.classes), shape, bool(confidence_attribute))


def create(**params: Any) -> ReefFunction:
    """cvat-cli's factory: `-p run=str:runs/<name>` and the other `load_function` parameters (`-p tta=bool:true` ...).

    A problem the user can fix ends the command with one sentence (exit status 2), not a traceback.
    """
    unknown = sorted(
        set(params) - set(load_function.__code__.co_varnames[: load_function.__code__.co_argcount]) - {"settings"}
    )
    try:
        if "run" not in params:
            raise UserError("the function needs the run folder: add -p run=str:runs/<name>")
        if unknown:
            raise UserError(
                f"unknown function parameter(s) {', '.join(unknown)}; the parameters are run, checkpoint, precision, device, "
                "weights, batch_size, tta, labels, shape and confidence_attribute"
            )
        return load_function(**params)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
