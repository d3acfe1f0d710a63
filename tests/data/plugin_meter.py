"""Example of a user's own node type, loaded with `audio-engine run GRAPH --plugin FILE.py`.

``test.meter`` passes its audio through unchanged and emits ``meter.level`` (the RMS level in
dBFS) at the end of every ``every_s`` seconds of audio, stamped on the audio clock; the figures do
not depend on the block size (an interval's sum of squares is carried across blocks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from engine.events import Event
from engine.node import AUDIO, EVENTS, AudioSpec, Node, NodeIO, param, register


@dataclass(frozen=True)
class Level(Event):
    """RMS level of the ``every_s`` seconds of audio that end at ``sample``."""

    type: ClassVar[str] = "meter.level"
    db: float = 0.0


@register
class Meter(Node):
    type_name = "test.meter"
    inputs = {"audio": AUDIO}
    outputs = {"audio": AUDIO, "events": EVENTS}

    @dataclass(frozen=True)
    class Params:
        every_s: float = param(1.0, gt=0, le=60, doc="seconds of audio per level")

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        return {"audio": inputs["audio"]}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        self.rate = specs["audio"].sample_rate
        self.channels = specs["audio"].channels
        self.n = max(1, round(self.params.every_s * self.rate))
        self.reset()

    def reset(self) -> None:
        self.acc = 0.0  # sum of squares of the current interval
        self.count = 0  # its frames so far

    def process(self, io: NodeIO) -> None:
        x = io.audio("audio")
        io.out("audio")[: len(x)] = x
        io.produced("audio", len(x))
        pos = 0
        while pos < len(x):
            take = min(self.n - self.count, len(x) - pos)
            seg = x[pos:pos + take]
            self.acc += float(np.einsum("ij,ij->", seg, seg, dtype=np.float64))
            self.count += take
            pos += take
            if self.count == self.n:
                mean = self.acc / (self.n * self.channels)
                io.emit("events", Level(io.start["audio"] + pos, self.rate, self.id,
                                        db=10 * math.log10(mean + 1e-12)))
                self.reset()
