"""Progress that reads well wherever it goes: a tqdm bar on a terminal, plain lines in a log.

On a terminal, `progress(...)` is an ordinary tqdm bar. When the stream is a file, a pipe or a CI
log, it is a tqdm whose display prints one plain line at every 10 % (and at least every 30 s while
something moves), with counts, elapsed time and rate: no carriage returns, no cursor escapes, lines
under 200 characters. Bars made with `leave=False` (passes inside a bigger one, such as validation
inside training) print only the time-based lines there.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from typing import IO, Any

from tqdm import tqdm

Progress = tqdm  # what `progress` returns, for annotations
STEP_PERCENT = 10
INTERVAL_S = 30.0
MAX_LINE = 199


def is_terminal(stream: IO[str] | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class _Discard:
    """Where tqdm's own drawing goes in log mode (its `\\r`, clears and cursor moves): nowhere."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class LogLines(tqdm):
    """A tqdm that prints a plain line every `STEP_PERCENT` % and every `INTERVAL_S` seconds, never redraws."""

    def __init__(self, *args: Any, file: IO[str] | None = None, **kwargs: Any) -> None:
        self._sink = file if file is not None else sys.stderr
        self._last_time = time.monotonic()
        self._last_n: float | None = None
        self._next_percent = 0.0
        kwargs.pop("dynamic_ncols", None)
        super().__init__(*args, file=_Discard(), mininterval=0, miniters=1, **kwargs)  # type: ignore[call-overload]
        if self.total:
            self._next_percent = (self.n * 100 / self.total // STEP_PERCENT + 1) * STEP_PERCENT
        self._last_n = self.n

    def line(self) -> str:
        """`desc: 30/120 img (25%), 0:12 elapsed, 2.41 img/s, ~0:37 left, loss=0.41`."""
        elapsed = self.format_dict["elapsed"]
        done = self.n - self.format_dict.get("initial", 0)
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [
            f"{self.n:g}/{self.total:g} {self.unit} ({100 * self.n / self.total:.0f}%)"
            if self.total
            else f"{self.n:g} {self.unit}",
            f"{tqdm.format_interval(elapsed)} elapsed",
        ]
        if rate:
            parts.append(
                f"{rate:.0f} {self.unit}/s"
                if rate >= 100
                else f"{rate:.3g} {self.unit}/s"
                if rate >= 1
                else f"{1 / rate:.3g} s/{self.unit}"
            )
            if self.total and self.n < self.total:
                parts.append(f"~{tqdm.format_interval((self.total - self.n) / rate)} left")
        postfix = self.format_dict.get("postfix")
        if postfix:
            parts.append(str(postfix))
        text = f"{self.desc.rstrip(': ')}: " + ", ".join(parts) if self.desc else ", ".join(parts)
        return text.replace("\r", " ").replace("\n", " ").replace("\x1b", "")[:MAX_LINE]

    def display(self, msg: str | None = None, pos: int | None = None) -> None:
        if msg == "" or self._last_n is None:  # tqdm clearing the bar, or drawing it before __init__ ends
            return
        now = time.monotonic()
        moved = self.n != self._last_n
        due = moved and now - self._last_time >= INTERVAL_S
        if self.total and self.leave is not False and self.n * 100 / self.total >= self._next_percent:
            self._next_percent = (self.n * 100 / self.total // STEP_PERCENT + 1) * STEP_PERCENT
            due = True
        if due:
            self._emit(now)

    def close(self) -> None:
        if (
            not self.disable
            and self._last_n is not None
            and self.n != self._last_n
            and (self.leave is not False or not self.total)
        ):
            self._emit(time.monotonic())  # where it ended, if the last line did not say so already
        super().close()

    def clear(self, nolock: bool = False) -> None:
        pass  # nothing is drawn, so nothing to clear (tqdm.write calls this)

    def _emit(self, now: float) -> None:
        self._last_time, self._last_n = now, self.n
        try:
            self._sink.write(self.line() + "\n")
            self._sink.flush()
        except (OSError, ValueError):  # a closed or vanished log must not stop the work
            pass


def progress(
    iterable: Iterable[Any] | None = None, *, file: IO[str] | None = None, disable: bool | None = False, **kwargs: Any
) -> tqdm:
    """A tqdm bar on a terminal, `LogLines` elsewhere; takes tqdm's arguments (`desc`, `total`, `unit`, `leave` ...).

    `disable=None` does not mean "off when not a terminal" here (tqdm's meaning): logs get their lines too.
    """
    stream = file if file is not None else sys.stderr
    if disable:
        return tqdm(iterable, file=stream, disable=True, **kwargs)
    if is_terminal(stream):
        return tqdm(iterable, file=stream, **kwargs)
    return LogLines(iterable, file=stream, **kwargs)


def write(message: str, file: IO[str] | None = None) -> None:
    """Print a message without breaking a bar on the terminal (`tqdm.write`), as a plain line in a log."""
    tqdm.write(message, file=file if file is not None else sys.stderr)


def quiet_foreign_bars(stream: IO[str] | None = None) -> None:
    """Outside a terminal, turn off FiftyOne's own progress bars (they redraw with `\\r`), unless the user chose.

    Set in the environment, so that the commands the demo runs as subprocesses inherit it too.
    """
    if is_terminal(stream if stream is not None else sys.stderr) or "FIFTYONE_SHOW_PROGRESS_BARS" in os.environ:
        return
    os.environ["FIFTYONE_SHOW_PROGRESS_BARS"] = "false"
    fiftyone = sys.modules.get("fiftyone")
    if fiftyone is not None and hasattr(fiftyone, "config"):
        fiftyone.config.show_progress_bars = False
