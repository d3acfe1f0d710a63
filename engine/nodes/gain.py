"""``dsp.gain``: a gain in dB, changed at run time without clicks."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..errors import ParamError
from ..node import AUDIO, AudioSpec, Node, NodeIO, param, range_violation, register


@register
class Gain(Node):
    """Multiplies the signal by ``10 ** (db / 20)``.

    A change through :meth:`control` (``Engine.set("g", db=-20)``) moves the gain linearly to
    the new value over ``ramp_ms`` (as Web Audio's ``linearRampToValueAtTime``), so it does not
    click; a new change during a ramp starts from where the ramp is. Real-time rules: ``process``
    writes into the preallocated output and a preallocated gain curve (no allocation)."""

    type_name = "dsp.gain"
    inputs = {"audio": AUDIO}
    outputs = {"audio": AUDIO}

    @dataclass(frozen=True)
    class Params:
        db: float = param(0.0, ge=-120, le=60, doc="gain in dB")
        ramp_ms: float = param(10.0, ge=0, le=10000, doc="time a run-time change takes (ms)")

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        return {"audio": inputs["audio"]}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        spec = specs["audio"]
        self.g = np.float32(10 ** (self.params.db / 20))  # the gain now
        self._from = self._to = float(self.g)
        self._ramp_len = max(1, int(round(self.params.ramp_ms * spec.sample_rate / 1000)))
        self._ramp_pos = self._ramp_len  # done
        self._curve = np.zeros((spec.max_block, 1), np.float32)
        self._steps = (np.arange(1, self._ramp_len + 1, dtype=np.float32)
                       / self._ramp_len)[:, None]

    def process(self, io: NodeIO) -> None:
        x = io.audio("audio")
        out = io.out("audio")
        n = len(x)
        k = min(n, self._ramp_len - self._ramp_pos)
        if k > 0:  # inside a ramp: gain = from + (to - from) * step
            c = self._curve[:k]
            np.multiply(self._steps[self._ramp_pos:self._ramp_pos + k], self._to - self._from,
                        out=c)
            c += self._from
            np.multiply(x[:k], c, out=out[:k])
            self._ramp_pos += k
            self.g = np.float32(c[k - 1, 0])
        k = max(k, 0)
        if k < n:
            np.multiply(x[k:], np.float32(self._to), out=out[k:n])
            self.g = np.float32(self._to)
        io.produced("audio", n)

    def check_control(self, values: dict[str, Any]) -> None:
        unknown = [k for k in values if k != "db"]
        db = values.get("db")
        meta = next(f for f in fields(self.Params) if f.name == "db").metadata
        if unknown or not isinstance(db, (int, float)) or isinstance(db, bool) \
                or range_violation(db, meta):
            raise ParamError(f"{self.id}: controls take db = a number in {meta['ge']:g}.."
                             f"{meta['le']:g}, got {values!r}")

    def control(self, values: dict[str, Any]) -> None:
        self.check_control(values)
        self._from = float(self.g)
        self._to = float(10 ** (values["db"] / 20))
        self._ramp_pos = 0
