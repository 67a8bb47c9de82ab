"""Pre-annotate CVAT jobs when they go "in progress": `python evaluate/webhook_service.py --run runs/<name> --address 0.0.0.0`."""

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from evaluate.cli import webhook_main  # noqa: E402

if __name__ == "__main__":
    webhook_main()
