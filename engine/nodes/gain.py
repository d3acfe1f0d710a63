"""``dsp.gain``: a fixed gain in dB."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..node import AUDIO, AudioSpec, Node, NodeIO, param, register


@register
class Gain(Node):
    """Multiplies the signal by ``10 ** (db / 20)``; ``process`` writes in place into the
    preallocated output (no allocation)."""

    type_name = "dsp.gain"
    inputs = {"audio": AUDIO}
    outputs = {"audio": AUDIO}

    @dataclass(frozen=True)
    class Params:
        db: float = param(0.0, ge=-120, le=60, doc="gain in dB")

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        return {"audio": inputs["audio"]}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        self.g = np.float32(10 ** (self.params.db / 20))

    def process(self, io: NodeIO) -> None:
        x = io.audio("audio")
        n = len(x)
        np.multiply(x, self.g, out=io.out("audio")[:n])
        io.produced("audio", n)

    def control(self, values: dict) -> None:
        from ..errors import ParamError
        db = values.get("db")
        if not isinstance(db, (int, float)) or not -120 <= db <= 60:
            raise ParamError(f"{self.id}: db must be a number in -120..60, got {db!r}")
        self.g = np.float32(10 ** (db / 20))
