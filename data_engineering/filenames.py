"""What file names and CVAT subsets tell us (pure): site, year and quadrat; the split; safe media paths.

    parse_quadrat_name("Moorea_2021_03.jpg")             -> QuadratName(site="Moorea", year=2021, quadrat="03")
    parse_quadrat_name("IMG_1.jpg", "{site}_{year}_{quadrat}") -> QuadratName(None, None, None)  # no match: empty
    split_from_subset("Training")                          -> "train"   (None when the subset maps to no split)
    parse_split_mapping("train=train,dev=val")             -> {"train": "train", "dev": "val"}
    media_path(media_dir, "Reef-3f9c01a2", 12, "sub/a.jpg") -> <media_dir>/Reef-3f9c01a2/task_12/sub/a.jpg
    name_length_problem("a" * 300 + ".jpg")                 -> "file name ... longer than ..." (None when it fits)

Each task's images live in their own `task_<id>` folder of the dataset's media folder (see
`data_engineering.media`), so two tasks holding the same file name never overwrite each other; a CVAT
file name that would climb out of it (`..`, absolute) is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from common.cli import UserError

DEFAULT_PATTERN = "{site}_{year}_{quadrat}"
DEFAULT_SPLIT_MAPPING = {"train": "train", "training": "train", "val": "val", "validation": "val", "test": "test"}

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_GROUP_REGEX = {"year": r"\d{4}", "site": r"[^/\\]+?", "quadrat": r"[^/\\]+"}


@dataclass(frozen=True)
class QuadratName:
    """Where and when a quadrat photo was taken, as its file name says; None where it does not say."""

    site: str | None = None
    year: int | None = None
    quadrat: str | None = None


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A file-name pattern like `{site}_{year}_{quadrat}` as a regex over the name without its extension.

    `{year}` matches four digits; any other `{name}` matches any text and is ignored unless it is
    `site` or `quadrat`; everything else must appear literally.
    """
    parts, seen, position = [], set(), 0
    for match in _PLACEHOLDER.finditer(pattern):
        name = match.group(1)
        if name in seen:
            raise UserError(f"file-name pattern {pattern!r} uses {{{name}}} twice; use each placeholder once")
        seen.add(name)
        parts.append(re.escape(pattern[position : match.start()]))
        parts.append(f"(?P<{name}>{_GROUP_REGEX.get(name, '.+?')})")
        position = match.end()
    parts.append(re.escape(pattern[position:]))
    return re.compile("".join(parts), re.IGNORECASE)


def parse_quadrat_name(file_name: str, pattern: str = DEFAULT_PATTERN) -> QuadratName:
    """Site, year and quadrat from a file name (folders and extension ignored); no match leaves them empty."""
    stem = PurePosixPath(file_name.replace("\\", "/")).stem
    match = pattern_regex(pattern).fullmatch(stem)
    if not match:
        return QuadratName()
    groups = match.groupdict()
    year = groups.get("year")
    return QuadratName(site=groups.get("site"), year=int(year) if year else None, quadrat=groups.get("quadrat"))


def parse_split_mapping(text: str | dict[str, str] | None = None) -> dict[str, str]:
    """A subset -> split mapping from `"subset=split,..."` (or a dict); None gives the default mapping."""
    if text is None or text == "":
        return dict(DEFAULT_SPLIT_MAPPING)
    if isinstance(text, dict):
        pairs = list(text.items())
    else:
        pairs = []
        for item in str(text).split(","):
            subset, sep, split = item.partition("=")
            if not sep or not subset.strip():
                raise UserError(
                    f"split mapping entry {item.strip()!r} is not 'subset=split'; write e.g. 'training=train,dev=val'"
                )
            pairs.append((subset, split))
    mapping = {str(subset).strip().lower(): str(split).strip().lower() for subset, split in pairs}
    unknown = sorted({split for split in mapping.values() if split not in ("train", "val", "test")})
    if unknown:
        raise UserError(f"split mapping names unknown split(s) {unknown}; map subsets to train, val or test")
    return mapping


def split_from_subset(subset: str | None, mapping: dict[str, str] | None = None) -> str | None:
    """The split (train/val/test) for a CVAT subset name, case-insensitive; None when it maps to none."""
    if not subset:
        return None
    return (DEFAULT_SPLIT_MAPPING if mapping is None else mapping).get(subset.strip().lower())


def safe_folder_name(name: str) -> str:
    """A project or dataset name usable as one folder name (separators replaced), never `.`/`..`/empty."""
    folder = re.sub(r"[/\\:\x00]", "_", name.strip())
    if folder in ("", ".", ".."):
        raise UserError(f"name {name!r} cannot be used as a folder name; choose a name with letters or digits")
    return folder


def check_relative_name(file_name: str) -> PurePosixPath:
    """A CVAT file name as a relative path, refused if it is absolute or climbs out with `..`."""
    posix = PurePosixPath(file_name.replace("\\", "/"))
    if (
        posix.is_absolute()
        or PureWindowsPath(file_name).drive
        or ".." in posix.parts
        or not posix.parts
        or str(posix) == "."
    ):
        raise UserError(
            f"file name {file_name!r} would be written outside the media folder; refusing it (rename the image in CVAT)"
        )
    return posix


NAME_MAX_BYTES = (
    255  # the longest file or folder name ext4, XFS, APFS and NTFS allow (UTF-8 bytes; NTFS counts 255 UTF-16 units)
)


def name_length_problem(file_name: str) -> str | None:
    """Why a CVAT file name cannot be a local file (a part longer than NAME_MAX_BYTES), or None when it can."""
    for part in check_relative_name(file_name).parts:
        if len(part.encode("utf-8", "surrogatepass")) > NAME_MAX_BYTES:
            return f"its file name has a part of {len(part.encode('utf-8', 'surrogatepass'))} bytes, longer than the {NAME_MAX_BYTES} a file system allows; rename it in CVAT"
    return None


def media_path(media_dir: Path, folder: str, task_id: int, file_name: str) -> Path:
    """Where a task's image lives locally: `<media_dir>/<folder>/task_<id>/<file name>` (folder: the dataset's media folder)."""
    return Path(media_dir) / safe_folder_name(folder) / f"task_{int(task_id)}" / check_relative_name(file_name)
