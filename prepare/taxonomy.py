"""Taxonomies as data: which raw CVAT label becomes which mask class, at every level of detail.

The finest level (`finegrained.yaml`) is the only file that knows raw CVAT labels (class names,
`aliases`, `drop`, `background`). Every coarser level names a `parent` and says which parent classes each of its
classes merges (`from`), so the alias list exists once and switching level needs no new CVAT
project. Resolving a level composes the chain and proves every finest class lands in exactly one
class of it. The format is documented in docs/taxonomies.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.cli import UserError
from common.fileio import read_yaml
from common.names import check_name
from prepare.layout import BACKGROUND_INDEX

BUILTIN_DIR = Path(__file__).resolve().parent / "taxonomies"
UNKNOWN_POLICIES = ("error", "other", "ignore")
OTHER_CLASS = "Other"  # the finest class that `--unknown other` sends unknown labels to


@dataclass(frozen=True)
class Taxonomy:
    """One resolved level: classes in mask order (index 1..N) and the raw label -> class map."""

    name: str
    path: Path  # the file to edit to change this level
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    label_to_class: Mapping[str, int]  # raw CVAT label -> class index (1..N)
    dropped: frozenset[str]  # raw labels that are not drawn (what is below them stays)
    finest_to_class: Mapping[str, int]  # finest class name -> class index at this level
    chain: tuple[str, ...]  # names from the finest level to this one
    finest_path: Path  # the file that holds the raw labels and aliases
    finest_class: Mapping[str, str]  # raw CVAT label -> finest class name (the same at every level)
    background: frozenset[str] = (
        frozenset()
    )  # raw labels ("not coral": Water, Sand) drawn as background (0) in stacking order

    def class_index(self, label: str) -> int | None:
        """Class index of a raw label: 0 for a background label, None when the label is dropped; KeyError when unknown."""
        if label in self.dropped:
            return None
        if label in self.background:
            return BACKGROUND_INDEX
        return self.label_to_class[label]

    @property
    def other_index(self) -> int | None:
        """The class the finest `Other` lands in at this level (where `--unknown other` sends labels)."""
        return self.finest_to_class.get(OTHER_CLASS)


def taxonomy_dirs(extra: str | Sequence[str | Path] = "") -> list[Path]:
    """Folders searched for taxonomy files: the user's (TAXONOMY_DIRS, `os.pathsep`-separated) first, then the built-in one."""
    if isinstance(extra, str):
        extra = [part for part in extra.split(os.pathsep) if part.strip()]
    return [Path(p).expanduser() for p in extra] + [BUILTIN_DIR]


def available_taxonomies(dirs: Iterable[Path]) -> list[str]:
    """Names of every taxonomy file found, first folder wins."""
    names: dict[str, None] = {}
    for folder in dirs:
        for path in sorted(Path(folder).glob("*.yaml")):
            names.setdefault(path.stem, None)
    return list(names)


def _find(name: str, dirs: Sequence[Path]) -> Path:
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return Path(name).resolve()
    check_name(name, "taxonomy", f"choose one of {', '.join(available_taxonomies(dirs))} or pass a .yaml file")
    for folder in dirs:
        path = Path(folder) / f"{name}.yaml"
        if path.is_file():
            return path.resolve()
    raise UserError(
        f"taxonomy {name!r} not found; available: {', '.join(available_taxonomies(dirs))} (folders searched: {', '.join(map(str, dirs))})"
    )


def _read(path: Path) -> dict:
    data = read_yaml(path, "taxonomy file")
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list) or not data["classes"]:
        raise UserError(f"taxonomy file {path} must be a mapping with a non-empty `classes` list")
    data["name"] = check_name(
        data.get("name", path.stem), f"the taxonomy name in {path}", "rename it (it names the prepared folder)"
    )
    return data


def _color(entry: dict, path: Path) -> tuple[int, int, int]:
    color = entry.get("color")
    if not (isinstance(color, list) and len(color) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in color)):
        raise UserError(f"class {entry.get('name')!r} in {path} needs `color: [R, G, B]` with three integers 0-255")
    return (color[0], color[1], color[2])


def _class_entries(data: dict, path: Path) -> list[dict]:
    names: set[str] = set()
    for entry in data["classes"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise UserError(f"every class in {path} needs a `name`")
        if entry["name"] in names:
            raise UserError(f"class {entry['name']!r} appears twice in {path}")
        names.add(entry["name"])
    if len(names) > 254:
        raise UserError(f"{path} has {len(names)} classes; masks hold at most 254 (0 is background, 255 ignore)")
    return data["classes"]


def _label_list(data: dict, key: str, path: Path) -> frozenset[str]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(label, str) and label.strip() for label in value):
        raise UserError(f"`{key}` in {path} must be a list of raw CVAT label names, e.g. `{key}: [Water, Sand]`")
    return frozenset(value)


def _finest(data: dict, path: Path) -> Taxonomy:
    entries = _class_entries(data, path)
    dropped = _label_list(data, "drop", path)
    background = _label_list(data, "background", path)
    if dropped & background:
        raise UserError(
            f"raw label {sorted(dropped & background)[0]!r} is under both `drop` and `background` in {path}; keep one"
        )
    label_to_class: dict[str, int] = {}
    for index, entry in enumerate(entries, start=1):
        for label in [entry["name"], *(entry.get("aliases") or [])]:
            if label in label_to_class or label in dropped or label in background:
                raise UserError(
                    f"raw label {label!r} is claimed twice in {path} (as a class, an alias, under `drop` or `background`); keep one"
                )
            label_to_class[label] = index
    return Taxonomy(
        name=data.get("name", path.stem),
        path=path,
        classes=tuple(e["name"] for e in entries),
        colors=tuple(_color(e, path) for e in entries),
        label_to_class=label_to_class,
        dropped=dropped,
        finest_to_class={e["name"]: i for i, e in enumerate(entries, start=1)},
        chain=(data.get("name", path.stem),),
        finest_path=path,
        finest_class={label: entries[index - 1]["name"] for label, index in label_to_class.items()},
        background=background,
    )


def merge_map(parent_classes: Sequence[str], entries: Sequence[dict], path: Path) -> dict[str, int]:
    """Parent class name -> child class index, proving each parent class lands in exactly one child class."""
    landing: dict[str, list[str]] = {name: [] for name in parent_classes}
    for entry in entries:
        for source in entry.get("from") or [entry["name"]]:
            if source not in landing:
                raise UserError(
                    f"class {entry['name']!r} in {path} merges {source!r}, which its parent level does not have; parent classes: {', '.join(parent_classes)}"
                )
            landing[source].append(entry["name"])
    missing = [name for name, homes in landing.items() if not homes]
    doubled = {name: homes for name, homes in landing.items() if len(homes) > 1}
    if missing or doubled:
        problems = [f"{name} lands in no class" for name in missing] + [
            f"{name} lands in {' and '.join(homes)}" for name, homes in doubled.items()
        ]
        raise UserError(f"every parent class must land in exactly one class of {path}: {'; '.join(problems)}")
    index = {entry["name"]: i for i, entry in enumerate(entries, start=1)}
    return {name: index[homes[0]] for name, homes in landing.items()}


def load_taxonomy(name: str, dirs: Sequence[Path] | None = None) -> Taxonomy:
    """Resolve a taxonomy by name (or .yaml path) through its chain of parents down to the finest level."""
    dirs = list(dirs) if dirs is not None else taxonomy_dirs()
    return _load(name, dirs, seen=())


def _load(name: str, dirs: Sequence[Path], seen: tuple[str, ...]) -> Taxonomy:
    path = _find(name, dirs)
    if str(path) in seen:
        raise UserError(f"taxonomy parents loop back on themselves: {' -> '.join(seen + (str(path),))}")
    data = _read(path)
    if "parent" not in data:
        return _finest(data, path)
    if (
        data.get("drop")
        or data.get("background")
        or any(isinstance(e, dict) and e.get("aliases") for e in data["classes"])
    ):
        raise UserError(
            f"{path} has a parent, so raw labels (`aliases`, `drop`, `background`) belong only in the finest level {data['parent']!r}"
        )
    parent = _load(str(data["parent"]), dirs, seen + (str(path),))
    entries = _class_entries(data, path)
    parent_to_child = merge_map(parent.classes, entries, path)
    child_of_index = {i: parent_to_child[c] for i, c in enumerate(parent.classes, start=1)}
    return Taxonomy(
        name=data.get("name", path.stem),
        path=path,
        classes=tuple(e["name"] for e in entries),
        colors=tuple(_color(e, path) for e in entries),
        label_to_class={label: child_of_index[i] for label, i in parent.label_to_class.items()},
        dropped=parent.dropped,
        finest_to_class={fine: child_of_index[i] for fine, i in parent.finest_to_class.items()},
        chain=parent.chain + (data.get("name", path.stem),),
        finest_path=parent.finest_path,
        finest_class=parent.finest_class,
        background=parent.background,
    )


def resolve_labels(
    taxonomy: Taxonomy, label_counts: Mapping[str, int], unknown: str, ignore_index: int
) -> dict[str, int | None]:
    """Raw label -> class index (None = not drawn, 0 = drawn as background) for every label seen, applying the unknown-label policy."""
    if unknown not in UNKNOWN_POLICIES:
        raise UserError(f"--unknown must be one of {', '.join(UNKNOWN_POLICIES)}, not {unknown!r}")
    resolved: dict[str, int | None] = {}
    strangers: dict[str, int] = {}
    for label, count in label_counts.items():
        try:
            resolved[label] = taxonomy.class_index(label)
        except KeyError:
            strangers[label] = count
    if not strangers:
        return resolved
    if unknown == "error":
        listing = ", ".join(
            f"{label!r} ({count})" for label, count in sorted(strangers.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        raise UserError(
            f"taxonomy {taxonomy.name!r} does not know these labels (shape counts): {listing}; add them as classes or `aliases` "
            f"in {taxonomy.finest_path}, or rerun with --unknown=other or --unknown=ignore"
        )
    if unknown == "other":
        if taxonomy.other_index is None:
            raise UserError(
                f"--unknown=other needs a class {OTHER_CLASS!r} in {taxonomy.finest_path}; add it or use --unknown=ignore"
            )
        return resolved | {label: taxonomy.other_index for label in strangers}
    return resolved | {label: ignore_index for label in strangers}


def coarser_levels(taxonomy: Taxonomy, dirs: Sequence[Path]) -> list[Taxonomy]:
    """Every taxonomy found in `dirs` that is defined, through its parents, from `taxonomy` (for `finegrained`:
    `extended`, `main_families`, `agnostic`), from the nearest to the coarsest; broken files are skipped here (they
    say what is wrong when loaded by name)."""
    levels = []
    for name in available_taxonomies(dirs):
        try:
            level = load_taxonomy(name, dirs)
        except UserError:
            continue
        chain = level.chain
        if (
            len(chain) > len(taxonomy.chain)
            and chain[: len(taxonomy.chain)] == taxonomy.chain
            and level.finest_path == taxonomy.finest_path
        ):
            levels.append(level)
    return sorted(levels, key=lambda level: (len(level.chain), level.name))


def level_mapping(finer: Taxonomy, coarser: Taxonomy) -> list[int]:
    """Mask value at `finer` -> mask value at `coarser` (0 background stays 0), one entry per value 0..N; a
    ValueError when some class of `finer` does not land in exactly one class of `coarser`."""
    mapping = [BACKGROUND_INDEX] + [-1] * len(finer.classes)
    for finest, index in finer.finest_to_class.items():
        target = coarser.finest_to_class.get(finest)
        if target is None or mapping[index] not in (-1, target):
            raise ValueError(f"taxonomy {coarser.name!r} is not defined from {finer.name!r}")
        mapping[index] = target
    if -1 in mapping:
        raise ValueError(f"class {finer.classes[mapping.index(-1) - 1]!r} of {finer.name!r} has no finest class")
    return mapping
