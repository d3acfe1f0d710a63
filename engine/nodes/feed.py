"""``source.feed``: audio pushed by the application (``Engine.feed``), for embedding."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..node import AUDIO, AudioSpec, NodeIO, param, register
from ._live import LiveSource


@register
class FeedSource(LiveSource):
    """Frames pushed with :meth:`push` from one application thread (the ring's single producer).

    The graph advances as audio arrives; ``end()`` lets it drain and finish. A full ring drops
    the newest frames and counts them (``ring_overflow_frames``).
    """

    type_name = "source.feed"
    outputs = {"audio": AUDIO}
    ring_seconds = 30.0

    @dataclass(frozen=True)
    class Params:
        sample_rate: int = param(16000, gt=0, doc="rate of the pushed audio")
        channels: int = param(1, gt=0, le=64, doc="channels of the pushed audio")

    def __init__(self, node_id: str, params: Params):
        super().__init__(node_id, params)
        self._ended = False

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        return {"audio": self._spec(self.params.sample_rate, self.params.channels)}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        self._make_ring(specs["audio"])

    def push(self, x: np.ndarray) -> int:
        if x.shape[1] != self.params.channels:
            raise ValueError(f"feed() got {x.shape[1]} channels, the graph expects "
                             f"{self.params.channels}")
        assert self.ring is not None
        return self.ring.write(x)

    def end(self) -> None:
        self._ended = True

    def wait_more(self) -> bool:
        if self._ended:
            return False
        time.sleep(0.001)
        return True

    def process(self, io: NodeIO) -> None:
        assert self.ring is not None
        out = io.out("audio")
        got = self.ring.read_into(out[: min(io.frames, len(out))])
        if self._ended and self.ring.available == 0:
            self.finished = True
        io.produced("audio", got)
