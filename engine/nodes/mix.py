"""``dsp.mix``: downmix, channel selection and channel matrixing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import NegotiationError
from ..node import AUDIO, AudioSpec, Node, NodeIO, param, register


@register
class Mix(Node):
    """Maps input channels to output channels with a matrix (``out = in @ M``).

    ``channels = 1`` (default) averages all inputs to mono; ``select = [0]`` picks channels;
    ``matrix`` gives the full ``in_channels x out_channels`` gains.
    """

    type_name = "dsp.mix"
    inputs = {"audio": AUDIO}
    outputs = {"audio": AUDIO}

    @dataclass(frozen=True)
    class Params:
        channels: int = param(1, gt=0, le=64, doc="output channels (average/duplicate)")
        select: list[int] = param([], doc="input channel indices to keep (overrides channels)")
        matrix: list[list[float]] = param([], doc="in x out gain matrix (overrides the rest)")

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        s = inputs["audio"]
        p = self.params
        if p.matrix:
            if len(p.matrix) != s.channels or len({len(r) for r in p.matrix}) != 1:
                raise NegotiationError(f"{self.id}: matrix must have {s.channels} rows (one per "
                                       f"input channel) of equal length, got {len(p.matrix)}")
            m = np.array(p.matrix, np.float32)
        elif p.select:
            bad = [c for c in p.select if not 0 <= c < s.channels]
            if bad:
                raise NegotiationError(f"{self.id}: select has channel(s) {bad} but the input "
                                       f"has {s.channels} channel(s) (0..{s.channels - 1})")
            m = np.zeros((s.channels, len(p.select)), np.float32)
            for j, c in enumerate(p.select):
                m[c, j] = 1.0
        else:
            m = np.full((s.channels, p.channels), 1.0 / s.channels, np.float32)
        self.m = m
        return {"audio": AudioSpec(s.sample_rate, m.shape[1], s.max_block)}

    def process(self, io: NodeIO) -> None:
        x = io.audio("audio")
        n = len(x)
        np.matmul(x, self.m, out=io.out("audio")[:n])
        io.produced("audio", n)
