"""The generated Nuclio function: function.yaml as CVAT reads it, and main.py answering a request shaped like CVAT's."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from evaluate_world import World

from common.cli import UserError
from evaluate.cli import deploy_nuclio
from evaluate.colonies import find_colonies
from evaluate.nuclio_function import RUNTIME_PACKAGES

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::models.backbones.RandomBackboneWarning")


@pytest.fixture(scope="module")
def folder(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nuclio") / "reef-function"
    deploy_nuclio(str(world.run_dir), str(out), precision="fp32")
    return out


class _Response:
    def __init__(self, body: str, headers: dict, content_type: str, status_code: int) -> None:
        self.body, self.headers, self.content_type, self.status_code = body, headers, content_type, status_code


def _context() -> SimpleNamespace:
    """What Nuclio hands a python handler: user_data, a logger (with `warn`) and the Response class."""
    logger = logging.getLogger("nuclio-test")
    return SimpleNamespace(
        user_data=SimpleNamespace(), logger=SimpleNamespace(info=logger.info, warn=logger.warning), Response=_Response
    )


def test_function_yaml_is_what_cvat_reads(folder: Path, world: World) -> None:
    document = yaml.safe_load((folder / "function.yaml").read_text())
    annotations = document["metadata"]["annotations"]
    assert (annotations["type"], annotations["framework"]) == ("detector", "pytorch")
    assert json.loads(annotations["spec"]) == [
        {"id": 1, "name": "Acropora", "type": "mask"},
        {"id": 2, "name": "Porites", "type": "mask"},
    ]
    assert document["metadata"]["name"] == "reefseg-tiny-linear" and annotations["name"] == "reefseg tiny-linear"
    spec = document["spec"]
    assert (spec["handler"], spec["runtime"], spec["eventTimeout"]) == ("main:handler", "python:3.11", "120s")
    png_base64 = 1920 * 1920 * 3 * 4 // 3  # an uncompressed-size PNG of a quadrat, base64-encoded
    assert spec["triggers"]["myHttpTrigger"]["attributes"]["maxRequestBodySize"] > png_base64
    assert "requirements.txt" in spec["build"]["directives"]["postCopy"][0]["value"]
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    required = (folder / "requirements.txt").read_text().split()
    assert "torch==2.14.1" in required and set(required) <= set(pins)
    assert sorted(p.name for p in (folder / "run").iterdir()) == ["checkpoint_best.json", "checkpoint_best.safetensors"]
    assert not (folder / "weights").exists()  # a random backbone needs no weights file
    assert all(
        (folder / "reefseg" / package / "__init__.py").is_file()
        for package in ("common", "models", "prepare", "evaluate")
    )


def _name(requirement: str) -> str:
    return re.split(r"[=<>~!\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_main_py_answers_a_cvat_request_from_the_copied_code(folder: Path, world: World) -> None:
    """In a fresh interpreter started in the folder, as Nuclio runs it: the code it imports is the folder's own."""
    script = textwrap.dedent("""
        import json, logging, sys
        from types import SimpleNamespace
        import main
        class Response:
            def __init__(self, body, headers, content_type, status_code):
                self.body, self.status_code = body, status_code
        logger = logging.getLogger("nuclio")
        context = SimpleNamespace(user_data=SimpleNamespace(), logger=SimpleNamespace(info=logger.info, warn=logger.warning), Response=Response)
        main.init_context(context)
        answer = main.handler(context, SimpleNamespace(body=sys.stdin.buffer.read()))
        import evaluate, importlib.metadata
        owners = importlib.metadata.packages_distributions()
        used = sorted({d for m in list(sys.modules) for d in owners.get(m.partition(".")[0], [])})
        print(json.dumps({"status": answer.status_code, "body": json.loads(answer.body), "code": evaluate.__file__, "used": used}))
    """)
    image = sorted((world.root / "media").glob("Reef_*.png"))[0]
    body = json.dumps({"image": base64.b64encode(image.read_bytes()).decode(), "threshold": 0.0}).encode()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {"DEVICE": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", script], input=body, cwd=folder, env=env, capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    answer = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert answer["status"] == 200 and Path(answer["code"]).is_relative_to(folder / "reefseg")
    # Every direct dependency the handler imported is one the image installs (scikit-image was missing once).
    direct = {_name(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    installed = {_name(p) for p in RUNTIME_PACKAGES}
    assert {_name(d) for d in answer["used"]} & direct <= installed
    mask = world.model_masks[0]
    expected = find_colonies(mask, np.ones(mask.shape, dtype=np.float32))
    assert len(answer["body"]) == len(expected)
    names = {1: "Acropora", 2: "Porites"}
    for class_index, name in names.items():
        painted = np.zeros(mask.shape, dtype=bool)
        for result in (r for r in answer["body"] if r["label"] == name):
            assert result["type"] == "mask" and 0 < float(result["confidence"]) <= 1 and len(result["points"]) >= 6
            left, top, right, bottom = result["mask"][-4:]
            painted[top : bottom + 1, left : right + 1] |= np.array(result["mask"][:-4], dtype=bool).reshape(
                bottom - top + 1, right - left + 1
            )
        kept = np.zeros(mask.shape, dtype=bool)
        for colony in (c for c in expected if c.class_index == class_index):
            left, top, right, bottom = colony.box
            kept[top:bottom, left:right] |= colony.pixels
        assert (painted == kept).all()


def test_handler_honours_the_threshold_and_refuses_a_bad_body(folder: Path, world: World) -> None:
    sys.path.insert(0, str(folder))
    try:
        import main  # the folder's main.py; its packages are already imported from the repository here
    finally:
        sys.path.remove(str(folder))
    context = _context()
    main.init_context(context)
    image = base64.b64encode(sorted((world.root / "media").glob("Reef_*.png"))[0].read_bytes()).decode()
    every = json.loads(main.handler(context, SimpleNamespace(body=json.dumps({"image": image}).encode())).body)
    confidences = sorted(float(r["confidence"]) for r in every)
    threshold = confidences[len(confidences) // 2]
    kept = json.loads(main.handler(context, SimpleNamespace(body={"image": image, "threshold": threshold})).body)
    assert 0 < len(kept) < len(every) and all(float(r["confidence"]) >= threshold - 1e-4 for r in kept)
    for body in (
        b"not json",
        json.dumps({"threshold": 0.5}),
        json.dumps({"image": "aGVsbG8=", "threshold": 0.5}),
        json.dumps({"image": image, "threshold": 3}),
    ):
        answer = main.handler(context, SimpleNamespace(body=body))
        assert answer.status_code == 400 and "the request must be JSON" in json.loads(answer.body)["error"]
    sys.modules.pop("main", None)


def test_an_existing_folder_is_only_replaced_when_asked_and_made_by_us(
    folder: Path, world: World, tmp_path: Path
) -> None:
    with pytest.raises(UserError, match="pass --replace to regenerate it"):
        deploy_nuclio(str(world.run_dir), str(folder), precision="fp32")
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="choose an empty or new folder"):
        deploy_nuclio(str(world.run_dir), str(other), replace=True)
    assert (other / "mine.txt").read_text() == "keep me"
    deploy_nuclio(str(world.run_dir), str(folder), precision="fp32", shape="polygon", replace=True)
    assert (
        json.loads(yaml.safe_load((folder / "function.yaml").read_text())["metadata"]["annotations"]["spec"])[0]["type"]
        == "polygon"
    )
    assert not list(folder.parent.glob(".reef-function*"))  # no staging or old folder left behind
    deploy_nuclio(str(world.run_dir), str(folder), precision="fp32", replace=True)  # back to masks for the other tests


def test_an_unwritable_place_is_one_sentence(world: World, tmp_path: Path) -> None:
    (tmp_path / "a file").write_text("in the way")
    with pytest.raises(UserError, match="cannot write .*a file is where a folder should be"):
        deploy_nuclio(str(world.run_dir), str(tmp_path / "a file" / "function"))
    assert (tmp_path / "a file").read_text() == "in the way"
