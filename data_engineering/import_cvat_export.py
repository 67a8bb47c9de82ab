"""Import a CVAT export into a persistent FiftyOne dataset: `python data_engineering/import_cvat_export.py <zip or folder> --dataset-name <name>`."""

import sys, pathlib  # noqa: E401
sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from data_engineering.import_export import main  # noqa: E402

if __name__ == "__main__":
    main()
