"""Predict a survey's photos with a trained run: `python evaluate/predict.py --run runs/<name> --dataset <name>` (or under torchrun)."""

import pathlib
import sys  # noqa: E401

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from evaluate.cli import predict_main  # noqa: E402

if __name__ == "__main__":
    predict_main()
