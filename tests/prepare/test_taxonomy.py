"""Taxonomies: the built-in chain, the exactly-one-home check, unknown labels."""

from pathlib import Path

import pytest

from common.cli import UserError
from prepare.taxonomy import BUILTIN_DIR, available_taxonomies, load_taxonomy, resolve_labels, taxonomy_dirs

FINEGRAINED = [
    "Acanthastrea", "Acropora", "Astreopora", "Atrea", "Fungia", "Goniastrea", "Leptastrea", "Merulinidae",
    "Millepora", "Montastrea", "Montipora", "Other", "Pavona/Leptoseris", "Pocillopora", "Porites", "Psammocora",
]  # fmt: skip


def test_builtin_levels_and_sizes():
    assert set(available_taxonomies([BUILTIN_DIR])) == {"finegrained", "extended", "main_families", "agnostic"}
    sizes = {name: len(load_taxonomy(name).classes) for name in available_taxonomies([BUILTIN_DIR])}
    assert sizes == {"finegrained": 16, "extended": 10, "main_families": 7, "agnostic": 1}
    assert list(load_taxonomy("finegrained").classes) == FINEGRAINED


def test_aliases_and_dropped_labels():
    fine = load_taxonomy("finegrained")
    assert fine.class_index("Pavona") == fine.class_index("Leptoseris") == fine.classes.index("Pavona/Leptoseris") + 1
    assert fine.class_index("Corail mou") == fine.classes.index("Other") + 1
    assert fine.class_index("Empty") is None
    with pytest.raises(KeyError):
        fine.class_index("Dendrophyllia")


@pytest.mark.parametrize("level", ["extended", "main_families", "agnostic"])
def test_every_finegrained_class_lands_in_exactly_one_class(level):
    taxonomy = load_taxonomy(level)
    homes = {
        fine: [i for i in range(1, len(taxonomy.classes) + 1) if taxonomy.finest_to_class[fine] == i]
        for fine in FINEGRAINED
    }
    assert all(len(h) == 1 for h in homes.values())
    assert set(taxonomy.finest_to_class) == set(FINEGRAINED)
    # raw labels follow their finegrained class
    assert taxonomy.class_index("Pavona") == taxonomy.finest_to_class["Pavona/Leptoseris"]
    assert taxonomy.class_index("Corail mou") == taxonomy.finest_to_class["Other"]


def test_coarse_groups_as_specified():
    extended, families = load_taxonomy("extended"), load_taxonomy("main_families")

    def members(taxonomy, name):
        return {fine for fine, i in taxonomy.finest_to_class.items() if taxonomy.classes[i - 1] == name}

    assert members(extended, "Group1") == {"Acanthastrea", "Atrea", "Goniastrea", "Leptastrea", "Merulinidae"}
    assert members(extended, "Other") == {"Other", "Montastrea", "Psammocora"}
    assert members(families, "Atrea") == members(extended, "Group1")
    assert members(families, "Other") == {"Astreopora", "Fungia", "Millepora", "Other", "Montastrea", "Psammocora"}
    assert load_taxonomy("agnostic").classes == ("coral",)
    assert load_taxonomy("agnostic").chain == ("finegrained", "extended", "main_families", "agnostic")


def _write(folder: Path, name: str, text: str) -> None:
    (folder / f"{name}.yaml").write_text(text)


BASE = "name: base\ndrop: [Empty]\nclasses:\n  - {name: A, color: [1, 2, 3], aliases: [a]}\n  - {name: B, color: [4, 5, 6]}\n  - {name: C, color: [7, 8, 9]}\n"


@pytest.mark.parametrize(
    "child, problem",
    [
        ("classes:\n  - {name: AB, color: [1, 1, 1], from: [A, B]}\n", "C lands in no class"),
        (
            "classes:\n  - {name: AB, color: [1, 1, 1], from: [A, B]}\n  - {name: BC, color: [2, 2, 2], from: [B, C]}\n",
            "B lands in AB and BC",
        ),
        ("classes:\n  - {name: X, color: [1, 1, 1], from: [A, B, C, D]}\n", "merges 'D'"),
        (
            "classes:\n  - {name: X, color: [1, 1, 1], from: [A, B, C], aliases: [x]}\n",
            "belong only in the finest level",
        ),
        ("classes:\n  - {name: X, color: [1, 1], from: [A, B, C]}\n", "color"),
    ],
)
def test_broken_coarser_level_is_refused_with_the_file(tmp_path, child, problem):
    _write(tmp_path, "base", BASE)
    _write(tmp_path, "child", "name: child\nparent: base\n" + child)
    with pytest.raises(UserError, match=problem) as error:
        load_taxonomy("child", taxonomy_dirs(str(tmp_path)))
    assert "child.yaml" in str(error.value)


def test_label_claimed_twice_is_refused(tmp_path):
    _write(tmp_path, "base", BASE.replace("[4, 5, 6]}", "[4, 5, 6], aliases: [a]}"))
    with pytest.raises(UserError, match="'a' is claimed twice"):
        load_taxonomy("base", taxonomy_dirs(str(tmp_path)))


def test_user_folder_comes_first_and_unknown_name_lists_choices(tmp_path):
    _write(tmp_path, "finegrained", BASE)
    assert load_taxonomy("finegrained", taxonomy_dirs(str(tmp_path))).classes == ("A", "B", "C")
    with pytest.raises(UserError, match="available: .*agnostic"):
        load_taxonomy("nope", taxonomy_dirs(str(tmp_path)))


def test_unknown_labels_stop_with_counts_and_the_file_to_edit():
    fine = load_taxonomy("finegrained")
    counts = {"Acropora": 9, "Dendrophyllia": 3, "Tubastrea": 5, "Empty": 2}
    with pytest.raises(UserError) as error:
        resolve_labels(fine, counts, "error", 255)
    message = str(error.value)
    assert (
        "'Tubastrea' (5), 'Dendrophyllia' (3)" in message
        and str(fine.finest_path) in message
        and "--unknown" in message
    )


def test_unknown_labels_other_or_ignore():
    extended = load_taxonomy("extended")
    counts = {"Acropora": 1, "Dendrophyllia": 1, "Empty": 1}
    assert resolve_labels(extended, counts, "other", 255) == {
        "Acropora": 1,
        "Dendrophyllia": extended.classes.index("Other") + 1,
        "Empty": None,
    }
    assert resolve_labels(extended, counts, "ignore", 255)["Dendrophyllia"] == 255
    assert resolve_labels(load_taxonomy("agnostic"), counts, "other", 255)["Dendrophyllia"] == 1
    with pytest.raises(UserError, match="--unknown must be one of"):
        resolve_labels(extended, counts, "guess", 255)


def test_parent_loop_is_refused_and_a_file_path_works(tmp_path):
    _write(tmp_path, "a", "name: a\nparent: b\nclasses:\n  - {name: X, color: [1, 1, 1]}\n")
    _write(tmp_path, "b", "name: b\nparent: a\nclasses:\n  - {name: X, color: [1, 1, 1]}\n")
    with pytest.raises(UserError, match="loop back"):
        load_taxonomy("a", taxonomy_dirs(str(tmp_path)))
    _write(tmp_path, "base", BASE)
    assert load_taxonomy(str(tmp_path / "base.yaml")).classes == ("A", "B", "C")


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"name: base\nclasses:\n  - {name: A, color: [1, 2, 3]\n", "is not valid YAML at line 4, column 1"),
        (b"name: base\nclasses: [\x00\x01]", "is not valid YAML"),
        (b"\xff\xfe\x00garbage", "is not UTF-8 text"),
        (b"name: ../../x\nclasses:\n  - {name: A, color: [1, 2, 3]}\n", "taxonomy name in"),
    ],
)
def test_a_malformed_taxonomy_file_is_one_sentence(tmp_path, content, problem):
    (tmp_path / "base.yaml").write_bytes(content)
    with pytest.raises(UserError) as error:
        load_taxonomy("base", taxonomy_dirs(str(tmp_path)))
    assert problem in str(error.value) and "\n" not in str(error.value)


def test_background_labels_paint_zero_and_are_checked(tmp_path):
    _write(tmp_path, "base", BASE.replace("drop: [Empty]", "drop: [Empty]\nbackground: [Water, Sand]"))
    _write(
        tmp_path, "child", "name: child\nparent: base\nclasses:\n  - {name: ABC, color: [1, 1, 1], from: [A, B, C]}\n"
    )
    for name in ("base", "child"):
        taxonomy = load_taxonomy(name, taxonomy_dirs(str(tmp_path)))
        assert (taxonomy.class_index("Water"), taxonomy.class_index("Sand"), taxonomy.class_index("Empty")) == (
            0,
            0,
            None,
        )
        assert "Water" not in taxonomy.label_to_class  # never a class, so never a colony in evaluation either
    for broken, problem in (
        (BASE.replace("drop: [Empty]", "drop: [Empty]\nbackground: [Empty]"), "both `drop` and `background`"),
        (BASE.replace("drop: [Empty]", "background: [a]"), "claimed twice"),
        (BASE.replace("drop: [Empty]", "background: Water"), "must be a list"),
    ):
        _write(tmp_path, "base", broken)
        with pytest.raises(UserError, match=problem):
            load_taxonomy("base", taxonomy_dirs(str(tmp_path)))
    _write(tmp_path, "base", BASE)
    _write(
        tmp_path,
        "child",
        "name: child\nparent: base\nbackground: [Water]\nclasses:\n  - {name: ABC, color: [1, 1, 1], from: [A, B, C]}\n",
    )
    with pytest.raises(UserError, match="belong only in the finest level"):
        load_taxonomy("child", taxonomy_dirs(str(tmp_path)))


def test_coarser_levels_and_the_mapping_up_to_each():
    from prepare.taxonomy import coarser_levels, level_mapping

    fine = load_taxonomy("finegrained")
    levels = coarser_levels(fine, [BUILTIN_DIR])
    assert [level.name for level in levels] == ["extended", "main_families", "agnostic"]
    assert [level.name for level in coarser_levels(levels[1], [BUILTIN_DIR])] == ["agnostic"]
    assert coarser_levels(levels[2], [BUILTIN_DIR]) == []
    extended, main_families, agnostic = levels
    to_extended = level_mapping(fine, extended)
    assert len(to_extended) == 17 and to_extended[0] == 0
    group1 = extended.classes.index("Group1") + 1
    for genus in ("Acanthastrea", "Atrea", "Goniastrea", "Leptastrea", "Merulinidae"):
        assert to_extended[fine.classes.index(genus) + 1] == group1
    assert level_mapping(fine, agnostic) == [0] + [1] * 16
    # composing the links gives the direct mapping
    to_main = level_mapping(extended, main_families)
    assert [to_main[i] for i in to_extended] == level_mapping(fine, main_families)
    with pytest.raises(ValueError, match="is not defined from"):
        level_mapping(extended, fine)


def test_a_broken_file_beside_is_no_coarser_level(tmp_path):
    from prepare.taxonomy import coarser_levels

    (tmp_path / "broken.yaml").write_text("name: broken\nparent: finegrained\nclasses: []\n")
    (tmp_path / "mine.yaml").write_text("name: mine\nparent: agnostic\nclasses:\n  - {name: coral, color: [1, 2, 3]}\n")
    names = [level.name for level in coarser_levels(load_taxonomy("extended"), taxonomy_dirs(str(tmp_path)))]
    assert names == ["main_families", "agnostic", "mine"]
