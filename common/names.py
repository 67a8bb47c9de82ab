"""Names that become parts of paths: checked here, once, so a name is never a path.

Dataset, run and taxonomy names end up as folder names (`DATA_ROOT/prepared/<dataset>_<taxonomy>`,
`RUNS_DIR/<run>`, `runs/<run>/eval/<dataset>/<split>`), and file names from an export or a CVAT
server end up as file names. `check_name` refuses anything that could climb out of, or point
outside, the folder it is joined to (separators, `..`, absolute paths, NUL, leading dots or
spaces) and anything too long for one path component once a suffix is added.
"""

from __future__ import annotations

import re

from common.errors import UserError

MAX_NAME_LENGTH = 100  # characters; leaves room for `_<taxonomy>` and suffixes within the file system's 255 bytes
MAX_NAME_BYTES = 200  # UTF-8 bytes, for names with accents or other scripts
MAX_FILE_NAME_BYTES = 255  # one path component on Linux, macOS and Windows file systems
# A letter or digit (any script) first, then letters, digits, `_`, `-`, `.`, `+`, `=`, `@`, `,`, `(`, `)` and spaces.
_NAME = re.compile(r"[^\W_][\w\-.+=@,() ]*")
RULE = "letters, digits, spaces and _-.+=@,() only, starting with a letter or digit, no '..', at most 100 characters"


def check_name(name: object, what: str, fix: str = "") -> str:
    """`name` when it is safe as one folder or file name; else UserError naming `what` (e.g. "--dataset-name"),
    the rule and `fix` (what to do instead, without the leading "; "). A whole number (fire reads `2021` as one)
    is taken as its digits."""
    if isinstance(name, int) and not isinstance(name, bool):
        name = str(name)
    text = name if isinstance(name, str) else None
    problem = ""
    if text is None:
        problem = f"must be text, not {type(name).__name__}"
    elif not text:
        problem = "is empty"
    elif "/" in text or "\\" in text or text.startswith("~"):
        problem = "is a path, not a name"
    elif ".." in text:
        problem = "contains '..'"
    elif len(text) > MAX_NAME_LENGTH or len(text.encode("utf-8")) > MAX_NAME_BYTES:
        problem = f"is {len(text)} characters long"
    elif not _NAME.fullmatch(text) or text != text.strip():
        problem = "has characters a folder name cannot safely hold"
    if problem:
        raise UserError(f"{what} {name!r} {problem}: use {RULE}" + (f"; {fix}" if fix else ""))
    return text  # type: ignore[return-value]


def check_file_name(name: object, what: str, fix: str = "") -> str:
    """`name` when it is safe as one file name (any characters but separators and NUL, not `.`/`..`, at most
    255 UTF-8 bytes): the looser rule for file names that come from exports and servers."""
    text = name if isinstance(name, str) else None
    problem = ""
    if text is None:
        problem = f"must be text, not {type(name).__name__}"
    elif text in ("", ".", ".."):
        problem = "is not a file name"
    elif "/" in text or "\\" in text or "\0" in text:
        problem = "is a path, not a file name"
    elif len(text.encode("utf-8", "surrogateescape")) > MAX_FILE_NAME_BYTES:
        problem = f"is {len(text.encode('utf-8', 'surrogateescape'))} bytes long, more than the file system's {MAX_FILE_NAME_BYTES}"
    if problem:
        raise UserError(f"{what} {name!r} {problem}" + (f"; {fix}" if fix else ""))
    return text  # type: ignore[return-value]
