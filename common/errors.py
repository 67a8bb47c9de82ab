"""The error every stage raises for a problem the user can fix (importing it loads no CLI library).

`common.cli.run` prints it as one sentence on stderr with exit status 2; `common.cli` re-exports it,
so `from common.cli import UserError` and `from common.errors import UserError` are the same class.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem in the user's input or setup, with what to do about it, in one sentence."""
