"""The Nuclio function CVAT calls for automatic annotation; `deploy_nuclio.py` copies this file as the function's `main.py`.

Nuclio calls `init_context(context)` once per worker (the run is loaded there, into
`context.user_data`) and `handler(context, event)` per request. CVAT posts
`{"image": <base64 file bytes>, "threshold": <0..1, optional>}` and reads back a JSON list with
one entry per colony: `{"confidence", "label", "points", "type": "mask", "mask"}` (see
`evaluate.cvat_shapes.nuclio_results`). The generated folder holds, beside this file, `run/`
(the checkpoint), `weights/` (the backbone's, when the run has real ones), `reefseg/` (the code it
imports) and `function.json` (which checkpoint, precision and shape the folder was made with).
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if (HERE / "reefseg").is_dir():  # the deployed folder; in the repository the packages are importable already
    sys.path.insert(0, str(HERE / "reefseg"))

SETTINGS_FILE = "function.json"


def init_context(context: Any) -> None:
    """Load the run once per worker."""
    from common.settings import load_settings
    from evaluate.cvat_function import load_function

    options = json.loads((HERE / SETTINGS_FILE).read_text())
    weights = HERE / options["weights"] if options.get("weights") else None
    context.logger.info(f"loading {options['run']} ({options['checkpoint']} checkpoint)")
    function = load_function(
        str(HERE / "run"), checkpoint=options["checkpoint"], precision=options["precision"], weights=str(weights) if weights else "",
        batch_size=options["batch_size"], settings=load_settings(),
    )  # fmt: skip
    context.user_data.function = function
    context.user_data.as_mask = options["shape"] == "mask"
    context.logger.info(f"ready: {', '.join(function.label_names.values())} on {function.detector.device}")


def _answer(context: Any, status: int, body: Any) -> Any:
    return context.Response(body=json.dumps(body), headers={}, content_type="application/json", status_code=status)


def handler(context: Any, event: Any) -> Any:
    """One CVAT request: the image's colonies as CVAT's list of shapes (an error answers 400 with one sentence)."""
    from common.cli import UserError
    from evaluate.cvat_function import decode_frame
    from evaluate.cvat_shapes import keep_confident, nuclio_results

    function = context.user_data.function
    try:
        data = event.body if isinstance(event.body, dict) else json.loads(event.body)
        threshold = data.get("threshold")
        threshold = None if threshold in (None, "") else float(threshold)
        if threshold is not None and not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be between 0 and 1, not {threshold}")
        image = decode_frame(base64.b64decode(data["image"], validate=False), "in the request")
    except (ValueError, TypeError, KeyError, binascii.Error, UserError) as error:
        context.logger.warn(f"refused a request: {error}")
        return _answer(
            context,
            400,
            {"error": f'the request must be JSON {{"image": <base64 image file>, "threshold": 0..1}}: {error}'},
        )
    colonies = keep_confident(function.detector.colonies(image), threshold)
    results = nuclio_results(colonies, function.label_names, as_mask=context.user_data.as_mask)
    context.logger.info(f"{len(results)} colonies on a {image.shape[1]}x{image.shape[0]} image")
    return _answer(context, 200, results)
