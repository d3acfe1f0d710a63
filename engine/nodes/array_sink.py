"""``sink.array``: collect a stream in memory, for offline processing from Python.

With :func:`engine.runtime.process` a graph works like a pedalboard effect chain: audio in as a
NumPy array, audio out as one::

    from engine.runtime import process
    out = process("my_chain.toml", x, rate=44100)   # {"out": array (frames x channels)}

``align = true`` (default) drops the latency declared along the stream's path (a resampler's
filter delay, for instance: ``AudioSpec.latency_s``), so output frame ``i`` lines up with input
frame ``i`` at the output rate. Real-time rules: a worker node (``block`` queue, nothing
dropped); it appends a copy of each block (allocation on its own thread, never the DSP thread)
up to ``max_s`` seconds, after which blocks are counted as dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..node import AUDIO, AudioSpec, Node, NodeIO, param, register


@register
class ArraySink(Node):
    """Keeps the stream in memory: :attr:`audio` (frames x channels, float32), :attr:`rate`."""

    type_name = "sink.array"
    inputs = {"audio": AUDIO}
    thread = "worker"
    queue_policy = "block"
    queue_size = 6000

    @dataclass(frozen=True)
    class Params:
        align: bool = param(True, doc="drop the latency declared along the path, so output "
                                      "frame i lines up with input frame i")
        max_s: float = param(3600.0, gt=0, le=86400, doc="most audio kept (seconds)")

    def __init__(self, node_id: str, params: Params):
        super().__init__(node_id, params)
        self._blocks: list[np.ndarray] = []
        self.rate = 0
        self.channels = 1
        self.frames = 0
        self.frames_over_max_s = 0  # arrived after max_s was full: not kept

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        return {}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        s = specs["audio"]
        self.rate, self.channels = int(s.sample_rate), int(s.channels)
        self._skip = int(round(s.latency_s * s.sample_rate)) if self.params.align else 0
        self._limit = int(self.params.max_s * s.sample_rate)
        self._blocks.clear()
        self.frames = self.frames_over_max_s = 0

    def process(self, io: NodeIO) -> None:
        x = io.audio("audio")
        if self._skip:
            k = min(self._skip, len(x))
            self._skip -= k
            x = x[k:]
        room = self._limit - self.frames
        if len(x) > room:
            self.frames_over_max_s += len(x) - max(room, 0)
            x = x[: max(room, 0)]
        if len(x):
            self._blocks.append(x.copy())
            self.frames += len(x)

    @property
    def audio(self) -> np.ndarray:
        """Everything collected, frames x channels (a new array; read it after the run)."""
        blocks = list(self._blocks)
        if not blocks:
            return np.zeros((0, self.channels), np.float32)
        return np.concatenate(blocks)

    def stats(self) -> dict:
        return {"frames": self.frames, "frames_over_max_s": self.frames_over_max_s}
