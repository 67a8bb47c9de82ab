"""Add survey photos that were never in CVAT to a FiftyOne dataset: `python data_engineering/import_images.py <folder or glob> --dataset-name <name>`."""

import pathlib
import sys  # noqa: E401

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from data_engineering.local_images import main  # noqa: E402

if __name__ == "__main__":
    main()
