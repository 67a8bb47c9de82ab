"""FIFTYONE_DATABASE_URI checked before FiftyOne uses it: one sentence, quickly, never the password in any form."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import pytest
from mongod_server import free_port

from common.cli import UserError
from common.database import check_database, display_uri
from common.settings import REPO_ROOT, load_settings

PASSWORD = "p@ss:w/rd é'\"%"
ENCODED = quote(PASSWORD, safe="")


def forms(secret: str) -> list[str]:
    """Every form a password could be printed in."""
    return [
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        repr(secret)[1:-1],
        base64.b64encode(secret.encode()).decode(),
        base64.b64encode(f"reef:{secret}".encode()).decode(),
    ]


def test_secret_forms_of_the_database_password_are_scrubbed(monkeypatch):
    monkeypatch.setenv("FIFTYONE_DATABASE_URI", f"mongodb://reef:{ENCODED}@db.example:27017/?authSource=admin")
    secrets = load_settings().secrets
    for form in forms(PASSWORD):
        assert form in secrets
    assert display_uri(f"mongodb://reef:{ENCODED}@db.example:27017/x") == "mongodb://reef:***@db.example:27017/x"


@pytest.fixture
def accept_and_close() -> Iterator[int]:
    """A loopback port that accepts connections and closes them at once (not a MongoDB)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
                connection.close()
            except OSError:
                continue

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def _private_mongod_port() -> str:
    uri = os.environ.get("FIFTYONE_DATABASE_URI", "")
    if not uri:
        pytest.skip("no private mongod for the tests")
    return uri.rsplit(":", 1)[1].split("/")[0]


@pytest.mark.parametrize("case", ["closed port", "accepts and closes", "wrong credentials", "malformed"])
def test_database_problems_are_one_sentence_without_the_password(case, accept_and_close):
    host = {
        "closed port": f"127.0.0.1:{free_port()}",
        "accepts and closes": f"127.0.0.1:{accept_and_close}",
        "wrong credentials": f"127.0.0.1:{_private_mongod_port()}",
        "malformed": "127.0.0.1:notaport",
    }[case]
    uri = f"mongodb://reef:{ENCODED}@{host}/?authSource=admin"
    start = time.monotonic()
    with pytest.raises(UserError) as error:
        check_database(uri)
    message = str(error.value)
    expected = {
        "closed port": "cannot reach the MongoDB at mongodb://reef:***@",
        "accepts and closes": "cannot reach the MongoDB",
        "wrong credentials": "refused its credentials",
        "malformed": "is not a valid MongoDB URI",
    }[case]
    assert expected in message and "\n" not in message and time.monotonic() - start < 10
    for form in forms(PASSWORD):
        assert form not in message


def test_the_tests_own_database_passes(monkeypatch):
    check_database()  # the private mongod (or none): nothing to say


@pytest.mark.parametrize(
    "command",
    [["data_engineering/import_cvat_export.py", "nowhere.zip"], ["prepare/prepare_data.py", "--dataset-name", "x"]],
)
def test_commands_say_it_in_one_line_with_exit_2(command, tmp_path):
    uri = f"mongodb://reef:{ENCODED}@127.0.0.1:{_private_mongod_port()}/?authSource=admin"
    export = tmp_path / "annotations.xml"
    export.write_text(
        "<annotations><meta><task><id>1</id></task></meta><image id='0' name='a.jpg' width='4' height='3'/></annotations>"
    )
    args = [str(export) if a == "nowhere.zip" else a for a in command]
    result = subprocess.run(
        [sys.executable, *args],
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "FIFTYONE_DATABASE_URI": uri,
            "MEDIA_DIR": str(tmp_path / "media"),
            "DATA_ROOT": str(tmp_path / "data"),
        },
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: the MongoDB at mongodb://reef:***@127.0.0.1:")
    assert "Traceback" not in result.stderr
    for form in forms(PASSWORD):
        assert form not in result.stdout + result.stderr
