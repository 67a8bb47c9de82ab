"""Send a run's predicted colonies to a CVAT task for correction: `python evaluate/push_to_cvat.py --run runs/<name> --task-id N`."""

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from evaluate.cli import push_main  # noqa: E402

if __name__ == "__main__":
    push_main()
