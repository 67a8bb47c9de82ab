"""Train a segmentation head on a frozen DINO backbone: `python train/train.py --help`."""

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from train.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
