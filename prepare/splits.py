"""Which sample goes to train, val or test.

`tags`: the sample's own `train`/`val`/`test` tag (from CVAT subsets or set by hand).
`grouped`: a deterministic split in which every photo of one quadrat (same site and quadrat, any
year) stays in one split, so the test set is not the training set photographed a year later.
It first places, for each class from the rarest up, a quadrat holding it into train, val and test
(train first, then val, then test, as far as the quadrats holding the class allow), then fills the
splits towards the ratios with the remaining quadrats, largest first.
`leave-site-out`: every photo of one site is the test set; the other sites' photos are split into train and val
as `grouped` does (whole quadrats, the train and val ratios rescaled to sum to 1), so the test set measures the
model on a reef it never saw.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from common.cli import UserError

SPLIT_POLICIES = ("tags", "grouped", "leave-site-out")
DEFAULT_RATIOS = (0.7, 0.2, 0.1)


@dataclass(frozen=True)
class SplitSample:
    """What a split decision needs to know about one sample."""

    sample_id: str
    tags: tuple[str, ...]
    group: Hashable  # e.g. (site, quadrat_id); samples of one group always share a split
    classes: frozenset[Hashable]  # finest classes present, so every taxonomy level gets the same split
    site: str | None = None  # the sample's `site` field (from the file name), for leave-site-out


def parse_ratios(ratios: str | Sequence[float]) -> tuple[float, float, float]:
    """`0.7,0.2,0.1` (text, or the tuple fire makes of it) -> three non-negative ratios summing to 1."""
    try:
        values = tuple(float(v) for v in (ratios.split(",") if isinstance(ratios, str) else ratios))
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1) > 1e-6:
        raise UserError(
            f"--ratios must be three non-negative numbers for train,val,test that sum to 1, like 0.7,0.2,0.1; got {ratios!r}"
        )
    return values  # three, as checked above


def split_by_tags(samples: Sequence[SplitSample], splits: Sequence[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """(sample id -> split, ids with no split tag, ids with several split tags)."""
    chosen: dict[str, str] = {}
    untagged: list[str] = []
    conflicting: list[str] = []
    for sample in samples:
        found = [s for s in splits if s in sample.tags]
        if len(found) == 1:
            chosen[sample.sample_id] = found[0]
        else:
            (untagged if not found else conflicting).append(sample.sample_id)
    return chosen, untagged, conflicting


def grouped_split(
    samples: Sequence[SplitSample], splits: Sequence[str], ratios: Sequence[float], seed: int
) -> dict[str, str]:
    """Sample id -> split, whole groups at a time, deterministic for a given seed and set of samples."""
    members: dict[Hashable, list[SplitSample]] = {}
    for sample in samples:
        members.setdefault(sample.group, []).append(sample)
    groups = sorted(members, key=repr)
    random.Random(seed).shuffle(groups)
    rank = {group: i for i, group in enumerate(groups)}
    size = {group: len(members[group]) for group in groups}
    classes = {group: frozenset().union(*(s.classes for s in members[group])) for group in groups}

    placed: dict[Hashable, str] = {}
    _cover_classes(groups, classes, size, rank, splits, placed)
    counts = {split: sum(size[g] for g, s in placed.items() if s == split) for split in splits}
    targets = {split: ratio * len(samples) for split, ratio in zip(splits, ratios)}
    for group in sorted((g for g in groups if g not in placed), key=lambda g: (-size[g], rank[g])):
        split = max(splits, key=lambda s: (targets[s] - counts[s], -splits.index(s)))
        placed[group] = split
        counts[split] += size[group]
    return {sample.sample_id: placed[group] for group in groups for sample in members[group]}


def _cover_classes(
    groups: Sequence[Hashable],
    classes: Mapping[Hashable, frozenset[Hashable]],
    size: Mapping[Hashable, int],
    rank: Mapping[Hashable, int],
    splits: Sequence[str],
    placed: dict[Hashable, str],
) -> None:
    """Place groups so that each class, rarest first, is in every split its unplaced groups can reach."""
    holders = {c: [g for g in groups if c in classes[g]] for c in set().union(*classes.values())} if groups else {}
    for cls in sorted(holders, key=lambda c: (len(holders[c]), repr(c))):
        present = {placed[g] for g in holders[cls] if g in placed}
        free = sorted((g for g in holders[cls] if g not in placed), key=lambda g: (size[g], rank[g]))
        needed = [s for s in splits if s not in present][: len(free)]
        # The largest free group goes to the first split in need (train), the smallest ones to the others.
        for split in needed:
            placed[free.pop() if split == splits[0] else free.pop(0)] = split


def check_split_policy(split_policy: str, site: str | None) -> None:
    """The policy is known and `site` goes with leave-site-out, and only with it (checked before any work)."""
    if split_policy not in SPLIT_POLICIES:
        raise UserError(f"--split-policy must be one of {', '.join(SPLIT_POLICIES)}, not {split_policy!r}")
    if split_policy == "leave-site-out" and not site:
        raise UserError("--split-policy leave-site-out needs --site NAME, the site whose photos become the test set")
    if site and split_policy != "leave-site-out":
        raise UserError(
            f"--site goes with --split-policy leave-site-out only (not {split_policy}); add that or drop --site"
        )


def known_sites(samples: Sequence[SplitSample]) -> list[str]:
    return sorted({sample.site for sample in samples if sample.site is not None})


def leave_site_out_split(
    samples: Sequence[SplitSample], splits: Sequence[str], ratios: Sequence[float], seed: int, site: str
) -> dict[str, str]:
    """Sample id -> split: the photos of `site` are the last split (test); the others go to the first two (train,
    val) by `grouped_split`, the first two ratios rescaled to sum to 1. A site no sample has is refused, listing
    the sites there are."""
    sites = known_sites(samples)
    if site not in sites:
        listing = ", ".join(sites) if sites else "none (no sample has a site: check FILENAME_PATTERN)"
        raise UserError(f"no sample is from site {site!r}; the dataset's sites are: {listing}")
    kept = [sample for sample in samples if sample.site != site]
    if not kept:
        raise UserError(f"every sample is from site {site!r}, so none is left to train on; add photos of other sites")
    train, val = ratios[0], ratios[1]
    if train + val <= 0:
        raise UserError("--ratios must give train and val a share for leave-site-out (test is the held-out site)")
    chosen = grouped_split(kept, splits[:2], (train / (train + val), val / (train + val)), seed)
    return chosen | {sample.sample_id: splits[2] for sample in samples if sample.site == site}
