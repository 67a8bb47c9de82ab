"""Turn a FiftyOne dataset into a training-ready folder of images and class-index masks: `python prepare/prepare_data.py <dataset>`."""

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from common.cli import precheck  # noqa: E402

if __name__ == "__main__":
    precheck("prepare.cli", "prepare")  # --help and flag slips answered before the stage's heavy imports
    from prepare.cli import main

    main()
