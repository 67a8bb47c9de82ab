"""`pixi run db`: a standalone MongoDB under DATA_ROOT/mongodb for a team's shared FiftyOne database.

Then every member sets `FIFTYONE_DATABASE_URI=mongodb://<address>:<port>` (docs/fiftyone_dataset.md).
DATA_ROOT comes from the settings (`.env` < environment), like every other path of the project.
"""

from __future__ import annotations

import os
import shutil

from common.cli import UserError, run
from common.settings import Settings, load_settings


def mongod_command(settings: Settings, port: int, address: str) -> list[str]:
    """The mongod command line that keeps its database in DATA_ROOT/mongodb."""
    return ["mongod", "--dbpath", str(settings.data_root / "mongodb"), "--port", str(port), "--bind_ip", address]


def start_database(port: int = 27017, address: str = "127.0.0.1") -> None:
    """Run MongoDB in the foreground with its files under DATA_ROOT/mongodb (Ctrl-C stops it).

    Args:
        port: the port it listens on.
        address: the address it listens on (0.0.0.0 for every interface; protect it then).
    """
    settings = load_settings()
    if shutil.which("mongod") is None:
        raise UserError(
            "mongod is not on PATH; run this as `pixi run db` (pixi installs MongoDB 6.0) or install MongoDB 6.0"
        )
    command = mongod_command(settings, port, address)
    (settings.data_root / "mongodb").mkdir(parents=True, exist_ok=True)
    print(
        f"MongoDB in {settings.data_root / 'mongodb'}; share it with FIFTYONE_DATABASE_URI=mongodb://{address}:{port}",
        flush=True,
    )
    os.execvp(command[0], command)


def main() -> None:
    run(start_database)
