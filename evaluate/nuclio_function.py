"""A run as a Nuclio function folder for CVAT's serverless route (`nuctl deploy --path <folder>`).

The folder holds `function.yaml` (CVAT reads `metadata.annotations`: name, `type: detector`,
`framework: pytorch`, and `spec`, the labels as JSON), `main.py` (evaluate/nuclio_handler.py),
`function.json` (its options), `requirements.txt` (pins from pyproject.toml, installed at build
time), `run/` (the chosen checkpoint), `weights/` (the backbone's, when the run has real ones) and
`reefseg/` (the packages main.py imports). It is built beside the target and moved into place at
the end, so an interrupted generation never leaves half a folder.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common.cli import UserError
from common.fileio import make_dirs, unwritable
from common.settings import REPO_ROOT, Settings

PACKAGES = ("common", "models", "prepare", "evaluate")  # what main.py imports, with their own imports
RUNTIME_PACKAGES = (
    "torch", "torchvision", "timm", "safetensors", "huggingface_hub", "numpy", "scipy", "scikit-image", "shapely",
    "rasterio", "opencv-python-headless", "pillow", "python-dotenv", "PyYAML", "tqdm",
)  # fmt: skip
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
NUCLIO_RUNTIME = "python:3.11"
BASE_IMAGE = "python:3.11-slim-bookworm"
DEFAULT_TIMEOUT_S = 120  # CVAT gives a function 120 s by default (CVAT_NUCLIO_DEFAULT_TIMEOUT)
MAX_BODY_BYTES = 64 * 1024 * 1024  # a 1920x1920 PNG is at most 11 MB, 15 MB in base64; room for larger quadrats
GENERATED_BY = "reefseg evaluate/deploy_nuclio.py"


@dataclass(frozen=True)
class NuclioOptions:
    run_dir: Path
    out: Path
    which: str = "best"
    precision: str = "auto"
    batch_size: int = 4
    shape: str = "mask"
    gpu: bool = False
    timeout_s: int = DEFAULT_TIMEOUT_S
    weights: str | None = None
    replace: bool = False


def function_name(run_name: str) -> str:
    """A Nuclio function name (lower-case letters, digits and dashes) for a run."""
    slug = re.sub(r"[^a-z0-9]+", "-", run_name.lower()).strip("-")
    return f"reefseg-{slug or 'run'}"[:56].rstrip("-")


def cvat_label_spec(label_names: dict[int, str], shape: str) -> list[dict[str, Any]]:
    """The labels as CVAT reads them from `metadata.annotations.spec`."""
    return [{"id": index, "name": name, "type": shape} for index, name in label_names.items()]


def runtime_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """The pinned packages main.py needs, with the pins pyproject.toml gives them."""
    pins = {}
    for requirement in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        name = re.split(r"[=<>~!\[ ;]", requirement, maxsplit=1)[0]
        pins[name.lower().replace("_", "-")] = requirement.split(";")[0].strip()
    missing = [p for p in RUNTIME_PACKAGES if p.lower().replace("_", "-") not in pins]
    if missing:
        raise RuntimeError(
            f"pyproject.toml no longer pins {', '.join(missing)}; update evaluate/nuclio_function.RUNTIME_PACKAGES"
        )
    return [pins[p.lower().replace("_", "-")] for p in RUNTIME_PACKAGES]


def function_yaml(name: str, run_name: str, label_names: dict[int, str], options: NuclioOptions) -> dict[str, Any]:
    """function.yaml as a dict: CVAT's annotations, the python runtime and its build, one HTTP trigger."""
    torch_index = "" if options.gpu else f" --extra-index-url {CPU_TORCH_INDEX}"
    spec: dict[str, Any] = {
        "description": f"reefseg run {run_name}: coral colonies by class, as {options.shape}s",
        "runtime": NUCLIO_RUNTIME,
        "handler": "main:handler",
        "eventTimeout": f"{options.timeout_s}s",
        "env": [
            {"name": "DEVICE", "value": "cuda" if options.gpu else "cpu"},
            {"name": "HF_HUB_OFFLINE", "value": "1"},
        ],
        "build": {
            "image": f"cvat.{name}",
            "baseImage": BASE_IMAGE,
            "directives": {
                "preCopy": [
                    {
                        "kind": "RUN",
                        "value": "apt-get update && apt-get install -y --no-install-recommends libglib2.0-0 && rm -rf /var/lib/apt/lists/*",
                    },
                    {"kind": "WORKDIR", "value": "/opt/nuclio"},
                ],
                "postCopy": [
                    {"kind": "RUN", "value": f"pip install --no-cache-dir{torch_index} -r /opt/nuclio/requirements.txt"}
                ],
            },
        },
        "triggers": {
            "myHttpTrigger": {
                "kind": "http",
                "maxWorkers": 1,
                "workerAvailabilityTimeoutMilliseconds": 10000,
                "attributes": {"maxRequestBodySize": MAX_BODY_BYTES},
            }  # fmt: skip
        },
        "platform": {
            "attributes": {"restartPolicy": {"name": "always", "maximumRetryCount": 3}, "mountMode": "volume"}
        },
    }
    if options.gpu:
        spec["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    return {
        "metadata": {
            "name": name,
            "namespace": "cvat",
            "labels": {"generated-by": "reefseg"},
            "annotations": {
                "name": f"reefseg {run_name}",
                "type": "detector",
                "framework": "pytorch",
                "spec": json.dumps(cvat_label_spec(label_names, options.shape), indent=2),
                "help_message": f"Coral colonies of run {run_name} ({', '.join(label_names.values())}); {GENERATED_BY}",
            },
        },
        "spec": spec,
    }


def _copy_packages(target: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, target / package, ignore=ignore)


def _check_target(out: Path, replace: bool) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    made_by_us = (out / "function.yaml").is_file() and GENERATED_BY in (out / "function.yaml").read_text(
        errors="replace"
    )
    if not replace or not made_by_us:
        advice = "pass --replace to regenerate it" if made_by_us else "choose an empty or new folder"
        raise UserError(f"{out} already exists and is not empty; {advice}")


def write_function(settings: Settings, options: NuclioOptions) -> dict[str, Any]:
    """Write the function folder; returns the parsed function.yaml."""
    from evaluate.cvat_function import SHAPES, load_function
    from models.checkpoint import checkpoint_stem

    if options.shape not in SHAPES:
        raise UserError(f"--shape must be {' or '.join(SHAPES)}, not {options.shape!r}")
    if options.timeout_s < 1:
        raise UserError(f"--timeout must be a positive number of seconds, not {options.timeout_s}")
    out = options.out.expanduser().resolve()
    _check_target(out, options.replace)
    weights = options.weights or settings.dino_weights or ""
    # loading the run checks the checkpoint, the weights' hash and the options before anything is written
    function = load_function(str(options.run_dir), checkpoint=options.which, precision=options.precision, weights=weights,
                             batch_size=options.batch_size, shape=options.shape, settings=settings)  # fmt: skip
    needs_weights = function.detector.spec.weights_hash != "random"
    run_name = options.run_dir.name
    name = function_name(run_name)
    document = function_yaml(name, run_name, function.label_names, options)
    make_dirs(out.parent)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as error:
        raise (unwritable(error, out) or error) from None
    try:
        stem = checkpoint_stem(options.run_dir, options.which)
        (staging / "run").mkdir()
        for suffix in (".safetensors", ".json"):
            shutil.copy2(stem.with_suffix(suffix), staging / "run" / f"{stem.name}{suffix}")
        weights_entry = ""
        if needs_weights:
            source = Path(weights).expanduser()
            if not source.exists():
                raise UserError(
                    f"the run's backbone weights must be a file or folder to copy into the function, not {weights!r}; pass --weights <file>"
                )
            weights_entry = f"weights/{source.name}"
            (staging / "weights").mkdir()
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, staging / weights_entry)
        _copy_packages(staging / "reefseg")
        shutil.copy2(REPO_ROOT / "evaluate" / "nuclio_handler.py", staging / "main.py")
        settings_doc = {"run": run_name, "checkpoint": options.which, "precision": options.precision,
                        "batch_size": options.batch_size, "shape": options.shape, "weights": weights_entry}  # fmt: skip
        (staging / "function.json").write_text(json.dumps(settings_doc, indent=2) + "\n")
        (staging / "requirements.txt").write_text("\n".join(runtime_requirements()) + "\n")
        header = f"# {GENERATED_BY} --run {options.run_dir}; deploy with: nuctl deploy --project-name cvat --path . --platform local\n"
        (staging / "function.yaml").write_text(header + yaml.safe_dump(document, sort_keys=False, width=120))
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        staging.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise (unwritable(error, out) or error) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return document
