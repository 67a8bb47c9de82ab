"""The thin wrapper every command-line entry point goes through.

Problems the user can fix are raised as `UserError` anywhere in a stage and printed here as one
sentence on stderr (exit status 2), never as a traceback, and scrubbed of any secret setting.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import fire


class UserError(Exception):
    """A problem in the user's input or setup, with what to do about it, in one sentence."""


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by `***`, so no password or token reaches output or logs."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def run(component: Any, secrets: Iterable[str] = ()) -> None:
    """Run a fire CLI; a `UserError` becomes one line on stderr and exit status 2."""
    try:
        fire.Fire(component)
    except UserError as error:
        print(f"error: {scrub(str(error), secrets)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume where it stopped", file=sys.stderr)
        sys.exit(130)
