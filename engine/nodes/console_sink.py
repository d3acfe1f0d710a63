"""``sink.console``: events as readable lines in the terminal."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np

from ..console import CONSOLE, clock
from ..events import Event
from ..node import EVENTS, AudioSpec, Node, NodeIO, param, register


def describe(ev: Event) -> str:
    """One human line for an event: time on the audio clock, type, the useful fields."""
    d = ev.to_dict()
    skip = {"type", "time_s", "sample", "sample_rate", "node"}
    fields = []
    for k, v in d.items():
        if isinstance(v, np.generic):  # a node's numpy scalar (np.float64 from np.log10, ...)
            v = v.item()
        if k in skip or (isinstance(v, (str, tuple, list)) and not v) or v is None:
            continue
        if k.endswith("_sample") and ev.sample_rate:
            k, v = k[: -len("_sample")] + "_s", round(v / ev.sample_rate, 2)
        if isinstance(v, float):
            v = f"{v:.2f}"
        if isinstance(v, list):  # (name, score) pairs; AudioSet names may contain commas
            v = "; ".join(f"{a[0]} ({a[1]:.2f})" if isinstance(a, list) and len(a) == 2 and
                          isinstance(a[1], float) else str(a) for a in v[:3])
        fields.append(f"{k}={v}")
    return f"[{clock(ev.time_s)}] {ev.type:<20} {ev.node:<10} " + " ".join(fields)


@register
class ConsoleSink(Node):
    """Prints each event it receives as one line above the live status line."""

    type_name = "sink.console"
    inputs = {"events": EVENTS}
    thread = "worker"
    queue_policy = "drop_oldest"
    queue_size = 2000

    @dataclass(frozen=True)
    class Params:
        include: list[str] = param(["*"], doc="event type patterns to print")
        exclude: list[str] = param(["vad.probability", "sound.scores", "transcript.partial",
                                    "engine.node_error"],
                                   doc="event type patterns to leave out (the command line "
                                       "prints node errors itself)")

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        return {}

    def process(self, io: NodeIO) -> None:
        p = self.params
        for ev in io.events("events"):
            t = ev.type
            if any(fnmatch.fnmatchcase(t, x) for x in p.include) and \
                    not any(fnmatch.fnmatchcase(t, x) for x in p.exclude):
                CONSOLE.line(describe(ev))
