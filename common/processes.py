"""Worker processes, started the same way by every stage that uses them (prepare's masks, predict's colonies)."""

from __future__ import annotations

import signal
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context


def spawned_pool(workers: int) -> ProcessPoolExecutor:
    """`workers` processes started fresh ("spawn", not fork: the parent may hold torch's, CUDA's or the database
    client's threads), each set up by `start_worker`."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=start_worker)


def start_worker() -> None:
    """A worker process's start. Ctrl-C reaches the parent alone, which stops handing out work and keeps what is
    finished. GDAL's warning that pixel coordinates are not georeferenced (they are not meant to be), shown once by
    each fresh process, is left out of the user's log."""
    from rasterio.errors import NotGeoreferencedWarning

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
