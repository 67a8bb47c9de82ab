"""Start and stop a standalone `mongod` on a free loopback port (the tests' private FiftyOne database)."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import time
from pathlib import Path


def find_mongod() -> str | None:
    """FiftyOne's bundled mongod (pip route), else one on PATH (pixi's conda-forge mongodb)."""
    spec = importlib.util.find_spec("fiftyone")
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "db" / "bin" / "mongod"
        if bundled.is_file():
            return str(bundled)
    return shutil.which("mongod")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mongod(binary: str, folder: Path, timeout: float = 30) -> tuple[subprocess.Popen, str]:
    """A mongod with its data and log in `folder`; returns the process and its URI once it accepts connections."""
    port = free_port()
    (folder / "db").mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            binary,
            "--dbpath",
            str(folder / "db"),
            "--port",
            str(port),
            "--bind_ip",
            "127.0.0.1",
            "--logpath",
            str(folder / "mongod.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"mongodb://127.0.0.1:{port}"
        if process.poll() is not None or time.monotonic() > deadline:
            stop_mongod(process)
            raise RuntimeError(f"mongod did not start; see {folder / 'mongod.log'}")
        time.sleep(0.1)


def stop_mongod(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=30)
