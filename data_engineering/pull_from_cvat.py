"""Pull a CVAT project's finished tasks into a persistent FiftyOne dataset: `python data_engineering/pull_from_cvat.py <project>`."""

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from common.cli import precheck  # noqa: E402

if __name__ == "__main__":
    # --help and flag slips answered before the stage's heavy imports
    precheck("data_engineering.pull", "pull_from_cvat")
    from data_engineering.pull import main

    main()
