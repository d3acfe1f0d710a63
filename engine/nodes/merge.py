"""``dsp.merge``: several audio streams side by side as one multichannel stream, aligned.

Inputs ``a`` and ``b`` (``c``, ``d`` optional), all at one sample rate; the output carries their
channels in that order (``a``'s first). Typical uses: two sources into ``spatial.hrtf`` (one
channel per source), two microphones into one recording, or, followed by ``dsp.mix``, a sum::

    [[nodes]]
    id = "both"
    type = "dsp.merge"
    in = { a = "voice.audio", b = "music_48k.audio" }

**Latency compensation** (as JUCE's graph does): every stream carries the latency declared
along its path (``AudioSpec.latency_s``: a resampler's filter delay, for instance). Inputs that
lag less are delayed to match the one that lags most, so material that was simultaneous at the
sources is simultaneous in the output; the output lags as much as that input.

Block alignment: upstream paths may deliver blocks of different lengths in a quantum (a
resampler gives 480 or 481 frames); each input goes through a small FIFO and the output takes as
many frames as every input has. Real-time rules: the FIFOs are preallocated in ``prepare`` and
moved with slice copies; no allocation, no per-sample Python. ``flush`` emits what is left,
completing shorter inputs with silence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import NegotiationError
from ..node import AUDIO, AudioSpec, Node, NodeIO, register

PORTS = ("a", "b", "c", "d")


@register
class Merge(Node):
    """Inputs ``a``, ``b`` (``c``, ``d``) side by side as one stream, latency-aligned."""

    type_name = "dsp.merge"
    inputs = {p: AUDIO for p in PORTS}
    outputs = {"audio": AUDIO}
    optional_inputs = frozenset({"c", "d"})

    @dataclass(frozen=True)
    class Params:
        pass

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        specs = [(p, inputs[p]) for p in PORTS if p in inputs]
        rates = {s.sample_rate for _, s in specs}
        if len(rates) > 1:
            raise NegotiationError(
                f"{self.id}: inputs must share one sample rate, got "
                + ", ".join(f"{p} {s.sample_rate} Hz" for p, s in specs)
                + f" (add a dsp.resample with rate = {max(rates)} before the others)")
        rate = rates.pop()
        lag = max(s.latency_s for _, s in specs)
        #: frames each input is delayed by so that all lag as much as the most delayed one
        self.delays = {p: int(round((lag - s.latency_s) * rate)) for p, s in specs}
        self._ports = [p for p, _ in specs]
        block = max(s.max_block for _, s in specs)
        self._cap = 2 * block + max(self.delays.values()) + 64
        return {"audio": AudioSpec(rate, sum(s.channels for _, s in specs), self._cap,
                                   latency_s=lag)}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        self._fifo = {p: np.zeros((self._cap, specs[p].channels), np.float32)
                      for p in self._ports}
        self._cols: dict[str, slice] = {}
        c = 0
        for p in self._ports:
            self._cols[p] = slice(c, c + specs[p].channels)
            c += specs[p].channels
        self.reset()

    def reset(self) -> None:
        for p in self._ports:  # the delay is silence already in the FIFO
            self._fifo[p][:] = 0.0
        self._fill = dict(self.delays)

    def _push(self, p: str, x: np.ndarray) -> None:
        f, n = self._fill[p], len(x)
        if f + n > self._cap:  # cannot happen with inputs from one clock; keep the newest
            keep = max(self._cap - n, 0)
            self._fifo[p][:keep] = self._fifo[p][f - keep:f]
            f = keep
            x = x[-self._cap:]
            n = len(x)
        self._fifo[p][f:f + n] = x
        self._fill[p] = f + n

    def _emit(self, io: NodeIO, n: int) -> None:
        out = io.out("audio")
        for p in self._ports:
            buf, f = self._fifo[p], self._fill[p]
            have = min(n, f)
            out[:have, self._cols[p]] = buf[:have]
            out[have:n, self._cols[p]] = 0.0
            if have < f:
                buf[: f - have] = buf[have:f]  # overlapping move: numpy copies safely
            self._fill[p] = f - have
        io.produced("audio", n)

    def process(self, io: NodeIO) -> None:
        for p in self._ports:
            self._push(p, io.audio(p))
        self._emit(io, min(self._fill.values()))

    def flush(self, io: NodeIO) -> None:
        for p in self._ports:
            if io.has_audio(p):
                self._push(p, io.audio(p))
        self._emit(io, min(max(self._fill.values()), len(io.out("audio"))))
