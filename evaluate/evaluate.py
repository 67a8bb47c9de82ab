"""Predict a split with a trained run, score it, write it back to FiftyOne: `python evaluate/evaluate.py --run runs/<name> --dataset <dataset>`."""

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from evaluate.cli import evaluate_main  # noqa: E402

if __name__ == "__main__":
    evaluate_main()
