"""Splits: by tags, or grouped by quadrat, deterministic and balanced."""

from collections import Counter

import pytest

from common.cli import UserError
from prepare.splits import SplitSample, grouped_split, parse_ratios, split_by_tags

SPLITS = ("train", "val", "test")


def _samples(n_quadrats=30, years=3, rare=None):
    """Quadrats photographed several years; class 'common' everywhere, rare classes in a few quadrats."""
    rare = rare or {}
    samples = []
    for q in range(n_quadrats):
        for year in range(years):
            classes = {"common"} | {name for name, quadrats in rare.items() if q in quadrats}
            samples.append(SplitSample(f"s{q}_{year}", (), ("site", f"q{q}"), frozenset(classes)))
    return samples


def test_whole_quadrats_stay_together_and_ratios_hold():
    samples = _samples()
    chosen = grouped_split(samples, SPLITS, (0.7, 0.2, 0.1), seed=0)
    assert set(chosen) == {s.sample_id for s in samples}
    for group in {s.group for s in samples}:
        assert len({chosen[s.sample_id] for s in samples if s.group == group}) == 1
    sizes = Counter(chosen.values())
    assert (sizes["train"], sizes["val"], sizes["test"]) == (63, 18, 9)


def test_deterministic_for_a_seed():
    samples = _samples()
    assert grouped_split(samples, SPLITS, (0.7, 0.2, 0.1), 5) == grouped_split(
        list(reversed(samples)), SPLITS, (0.7, 0.2, 0.1), 5
    )
    assert grouped_split(samples, SPLITS, (0.7, 0.2, 0.1), 5) != grouped_split(samples, SPLITS, (0.7, 0.2, 0.1), 6)


@pytest.mark.parametrize("seed", range(5))
def test_every_class_in_val_and_test_where_the_data_allow(seed):
    rare = {"three": {4, 11, 17}, "four": {1, 2, 3, 25}, "two": {8, 9}, "one": {13}}
    samples = _samples(rare=rare)
    chosen = grouped_split(samples, SPLITS, (0.7, 0.2, 0.1), seed)

    def splits_with(name):
        return {chosen[s.sample_id] for s in samples if name in s.classes}

    assert splits_with("three") == splits_with("four") == splits_with("common") == set(SPLITS)
    assert splits_with("two") == {"train", "val"}
    assert splits_with("one") == {"train"}


def test_split_by_tags_lists_untagged_and_conflicting():
    samples = [
        SplitSample("a", ("train",), None, frozenset()),
        SplitSample("b", ("val", "reviewed"), None, frozenset()),
        SplitSample("c", ("reviewed",), None, frozenset()),
        SplitSample("d", ("train", "test"), None, frozenset()),
    ]
    chosen, untagged, conflicting = split_by_tags(samples, SPLITS)
    assert chosen == {"a": "train", "b": "val"} and untagged == ["c"] and conflicting == ["d"]


def test_parse_ratios():
    assert parse_ratios("0.7,0.2,0.1") == (0.7, 0.2, 0.1)
    assert parse_ratios((0.8, 0.1, 0.1)) == (0.8, 0.1, 0.1)
    for bad in ("0.7,0.2", "0.5,0.5,0.5", "a,b,c", (1.2, -0.1, -0.1)):
        with pytest.raises(UserError, match="--ratios"):
            parse_ratios(bad)


def test_leave_site_out_holds_the_whole_site_in_test_and_splits_the_others_by_quadrat():
    from prepare.splits import leave_site_out_split

    samples = [
        SplitSample(f"{site}{q}_{year}", (), (site, q), frozenset({"common"}), site=site)
        for site in ("Haapiti", "Tiahura", "Vaipahu")
        for q in range(10)
        for year in range(2)
    ] + [SplitSample("nameless", (), ("sample", "nameless"), frozenset({"common"}))]
    chosen = leave_site_out_split(samples, SPLITS, (0.7, 0.2, 0.1), seed=3, site="Tiahura")
    assert set(chosen) == {s.sample_id for s in samples}
    assert {i for i, split in chosen.items() if split == "test"} == {
        s.sample_id for s in samples if s.site == "Tiahura"
    }
    for group in {s.group for s in samples}:  # whole quadrats, any year
        assert len({chosen[s.sample_id] for s in samples if s.group == group}) == 1
    sizes = Counter(chosen.values())
    assert (sizes["train"], sizes["val"], sizes["test"]) == (32, 9, 20)  # 41 others at 7:2, whole quadrats
    assert chosen == leave_site_out_split(list(reversed(samples)), SPLITS, (0.7, 0.2, 0.1), seed=3, site="Tiahura")
    with pytest.raises(
        UserError, match=r"no sample is from site 'Tiahra'; the dataset's sites are: Haapiti, Tiahura, Vaipahu$"
    ):
        leave_site_out_split(samples, SPLITS, (0.7, 0.2, 0.1), seed=3, site="Tiahra")
    with pytest.raises(UserError, match="none is left to train on"):
        leave_site_out_split([s for s in samples if s.site == "Haapiti"], SPLITS, (0.7, 0.2, 0.1), 3, "Haapiti")


@pytest.mark.parametrize(
    "policy,site,problem",
    [
        ("leave-site-out", None, "needs --site NAME"),
        ("grouped", "Tiahura", "--site goes with --split-policy leave-site-out only"),
        ("by-site", None, "must be one of tags, grouped, leave-site-out"),
    ],
)
def test_split_policy_and_site_are_checked_together(policy, site, problem):
    from prepare.splits import check_split_policy

    with pytest.raises(UserError, match=problem):
        check_split_policy(policy, site)
