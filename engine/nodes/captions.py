"""``sink.captions``: a live caption line in the terminal.

Stable words are printed plain, the unstable tail dim; the line is kept to ``width`` characters
(42 by default, the broadcast caption width) showing the most recent words. Each final scrolls
up as a finished line (wrapped at ``width``) with its time on the audio clock.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from ..console import CONSOLE, clock, columns
from ..events import TranscriptFinal, TranscriptPartial, TranscriptSkipped
from ..node import EVENTS, AudioSpec, Node, NodeIO, param, register

DIM, RESET = "\x1b[2m", "\x1b[0m"


def tail_fit(stable: str, unstable: str, width: int) -> tuple[str, str]:
    """The end of ``stable + unstable`` that fits ``width`` characters, split back in two."""
    words = [(w, True) for w in stable.split()] + [(w, False) for w in unstable.split()]
    out: list[tuple[str, bool]] = []
    n = 0
    for w, st in reversed(words):
        add = len(w) + (1 if out else 0)
        if n + add > width:
            break
        out.append((w, st))
        n += add
    out.reverse()
    return (" ".join(w for w, s in out if s), " ".join(w for w, s in out if not s))


@register
class CaptionsSink(Node):
    """Terminal captions (see the module docstring); runs on a worker thread."""

    type_name = "sink.captions"
    inputs = {"events": EVENTS}
    thread = "worker"
    queue_policy = "drop_oldest"
    queue_size = 1000

    @dataclass(frozen=True)
    class Params:
        width: int = param(42, ge=10, le=200, doc="characters per caption line")
        timestamps: bool = param(True, doc="prefix finals with their start time")

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        return {}

    def process(self, io: NodeIO) -> None:
        w = self.params.width
        if CONSOLE.tty:  # a narrower terminal would break the lines mid-word itself
            w = max(10, min(w, columns() - 1 - (11 if self.params.timestamps else 0)))
        for ev in io.events("events"):
            if isinstance(ev, TranscriptPartial):
                st, un = tail_fit(ev.stable, ev.unstable, w)
                CONSOLE.live(st + (" " if st and un else "") + (DIM + un + RESET if un else ""))
            elif isinstance(ev, TranscriptSkipped):  # no final for this segment: clear it
                CONSOLE.live("")
            elif isinstance(ev, TranscriptFinal):
                CONSOLE.live("")
                t = ev.start_sample / ev.sample_rate if ev.sample_rate else 0.0
                stamp = f"[{clock(t)}] " if self.params.timestamps else ""
                if CONSOLE.tty and len(stamp) > 11:  # past an hour: h:mm:ss takes more room
                    w = max(10, min(self.params.width, columns() - 1 - len(stamp)))
                lines = textwrap.wrap(ev.text, w) or [""]
                for i, line in enumerate(lines):  # wrapped lines line up under the first
                    CONSOLE.line((stamp if i == 0 else " " * len(stamp)) + line)

    def close(self) -> None:
        CONSOLE.live("")
