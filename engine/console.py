"""The terminal: event lines scroll above a live status line (input level, node load, events).

All writers go through :data:`CONSOLE` so lines never tear: a line printed by a sink clears the
status line, prints, and the status line is redrawn. Without a terminal (pipes, CI) the status
line is off and lines are plain.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
from typing import TextIO

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def clock(t: float) -> str:
    """A time on the audio clock for the terminal: ``  12.34s`` (7 digits) under an hour, then
    ``h:mm:ss.ss`` (a monitor left running shows ``10:02:03.40``, not ``36123.40s``)."""
    cs = round(max(t, 0.0) * 100)  # hundredths, rounded once (59.996 s is 1:00.00, not 0:60)
    if cs < 360000:
        return f"{cs / 100:7.2f}s"
    h, cs = divmod(cs, 360000)
    m, cs = divmod(cs, 6000)
    return f"{h}:{m:02d}:{cs // 100:02d}.{cs % 100:02d}"


def fit(text: str, width: int, keep_end: bool = False) -> str:
    """``text`` cut to ``width`` visible characters, so a redrawn line never wraps (wrapped
    lines would break the cursor arithmetic that clears them): its start is kept, or with
    ``keep_end`` its end (a caption's newest words). Escape codes are kept only when nothing
    needs cutting."""
    plain = _ANSI.sub("", text)
    if len(plain) <= width:
        return text
    if keep_end:
        return "~" + plain[len(plain) - max(width - 1, 0):]
    return plain[: max(width - 1, 0)] + "~"


def columns() -> int:
    """The terminal's width now (80 when unknown)."""
    return shutil.get_terminal_size((80, 24)).columns


class Console:
    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()
        self._status = ""
        self._live = ""  # a live line (captions) shown above the status line
        self._drawn: list[int] = []  # visible length of each line drawn below the cursor
        self.status_enabled = False

    @property
    def tty(self) -> bool:
        return hasattr(self.stream, "isatty") and self.stream.isatty() and \
            os.environ.get("TERM") != "dumb"

    def _clear(self) -> None:
        if self.tty and self._drawn:
            # rows the drawn lines take now: a terminal made narrower since wraps them
            cols = max(1, columns())
            n = sum(max(1, -(-length // cols)) for length in self._drawn)
            self.stream.write("\r\x1b[K" + "\x1b[1A\x1b[K" * (n - 1))
            self._drawn = []

    def _draw(self) -> None:
        if not self.tty:
            return
        width = columns() - 1
        parts = []
        if self._live:
            parts.append(fit(self._live, width, keep_end=True))
        if self._status and self.status_enabled:
            parts.append("\x1b[2m" + fit(self._status, width) + "\x1b[0m")
        self._drawn = [len(_ANSI.sub("", p)) for p in parts]
        self.stream.write("\n".join(parts))

    def line(self, text: str) -> None:
        """Print a line that scrolls up (an event, a final caption)."""
        with self._lock:
            self._clear()
            self.stream.write(text + "\n")
            self._draw()
            self.stream.flush()

    def live(self, text: str) -> None:
        """Set the live line (e.g. the caption being spoken); only drawn on a terminal."""
        with self._lock:
            if not self.tty:
                self._live = text
                return
            self._clear()
            self._live = text
            self._draw()
            self.stream.flush()

    def status(self, text: str) -> None:
        with self._lock:
            if not (self.tty and self.status_enabled):
                return
            self._clear()
            self._status = text
            self._draw()
            self.stream.flush()

    def close(self) -> None:
        with self._lock:
            self._clear()
            self._status = ""
            self._live = ""
            self.stream.flush()


CONSOLE = Console()
