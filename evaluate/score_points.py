"""Score a run's predictions at imported CoralNet-style points: `python evaluate/score_points.py --run runs/<name> --dataset <name>`."""

import pathlib
import sys  # noqa: E401

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from evaluate.cli import score_points_main  # noqa: E402

if __name__ == "__main__":
    score_points_main()
