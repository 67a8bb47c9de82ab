"""Segmentation heads by name: every head takes the same list of feature maps and returns class logits.

Adding a head: one module with a `SegHead` subclass, and one line in `HEADS`.
"""

from __future__ import annotations

import inspect
from typing import Any

from common.errors import UserError
from models.heads.base import IGNORE_INDEX, SegHead
from models.heads.linear import LinearHead
from models.heads.mask2former import Mask2FormerHead
from models.heads.pmt import PMTHead
from models.heads.segformer import SegFormerHead
from models.heads.upernet import UperNetHead

HEADS: dict[str, type[SegHead]] = {
    "linear": LinearHead,
    "segformer": SegFormerHead,
    "upernet": UperNetHead,
    "mask2former": Mask2FormerHead,
    "pmt": PMTHead,
}

__all__ = ["HEADS", "IGNORE_INDEX", "SegHead", "build_head", "head_options"]


def head_options(name: str) -> list[str]:
    """The keyword options head `name` takes (its own, then the shared loss options of `SegHead`)."""
    options: list[str] = []
    for cls in (HEADS[name], SegHead):
        for param in list(inspect.signature(cls.__init__).parameters.values())[4:]:
            if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) and param.name not in options:
                options.append(param.name)
    return options


def build_head(name: str, in_channels: int, num_inputs: int, num_classes: int, **config: Any) -> SegHead:
    """The head called `name`; `config` holds its own options (widths, depths, loss weights).

    The head remembers `name` and `config`, which is what a checkpoint needs to rebuild it.
    """
    if name not in HEADS:
        raise UserError(f"unknown head {name!r}; choose one of: {', '.join(HEADS)}")
    known = head_options(name)
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(unknown)} for head {name!r}; its options: {', '.join(known)}")
    try:
        head = HEADS[name](in_channels, num_inputs, num_classes, **config)
    except ValueError as error:  # a value the user chose in the config, e.g. a width not divisible by the heads
        raise UserError(f"head {name!r}: {error}") from None
    head.name = name
    head.config = dict(config)
    return head
