"""Import CoralNet-style point annotations onto a dataset's samples: `python data_engineering/import_points.py <csv> --dataset-name <name>`."""

import pathlib
import sys  # noqa: E401

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from data_engineering.coralnet_points import main  # noqa: E402

if __name__ == "__main__":
    main()
