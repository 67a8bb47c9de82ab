"""FiftyOne plugin `@reefseg/metrics`: the custom evaluation metrics of evaluate/panel_metrics.py.

FiftyOne imports this file by path (not as part of the `evaluate` package); the operators live in
`evaluate.panel_metrics`, so the repository root must be importable, as it is in reefseg's commands.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # a FiftyOne process of its own (e.g. `fiftyone app launch`) started elsewhere
    sys.path.append(str(ROOT))

from evaluate.panel_metrics import register  # noqa: E402

__all__ = ["register"]
