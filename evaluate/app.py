"""Open the FiftyOne App on a dataset and print its URL: `python evaluate/app.py <dataset>`."""

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from evaluate.cli import app_main  # noqa: E402

if __name__ == "__main__":
    app_main()
