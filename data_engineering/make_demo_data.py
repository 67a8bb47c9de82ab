"""Generate the synthetic reef-quadrat CVAT export: `python data_engineering/make_demo_data.py [--num-images 30 --size 448]`."""

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from common.cli import precheck  # noqa: E402

if __name__ == "__main__":
    # --help and flag slips answered before the stage's heavy imports
    precheck("data_engineering.demo_data", "make_demo_data")
    from data_engineering.demo_data import main

    main()
