"""Import a CVAT export into a persistent FiftyOne dataset: `python data_engineering/import_cvat_export.py <zip or folder> --dataset-name <name>`."""

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from common.cli import precheck  # noqa: E402

if __name__ == "__main__":
    # --help and flag slips answered before the stage's heavy imports
    precheck("data_engineering.import_export", "import_command")
    from data_engineering.import_export import main

    main()
