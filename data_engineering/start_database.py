"""Start a MongoDB under DATA_ROOT/mongodb for a shared FiftyOne database: `python data_engineering/start_database.py`."""

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from data_engineering.shared_database import main  # noqa: E402

if __name__ == "__main__":
    main()
