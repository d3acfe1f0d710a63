"""``source.feed``: audio pushed by the application (``Engine.feed``), for embedding."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import EngineError
from ..node import AUDIO, AudioSpec, NodeIO, param, register
from ..pcm import MAX_RATE, MIN_RATE
from ._live import LiveSource


class FeedAdapter:
    """Float frames as an application or a client has them -> the feed's rate and channels.

    More channels than a mono feed takes are averaged; audio at another rate goes through a
    :class:`~engine.dsp.resample.StreamingResampler` kept for the stream (its rate may not
    change midway), whose filter delay is dropped from the start (and its tail emitted by
    :meth:`flush`), so fed audio keeps its timing: frame ``i`` of the input is at ``i / rate``
    seconds on the graph's clock too. Used by :meth:`engine.runtime.Engine.feed` and the web
    server's /ingest. Not real-time code: it allocates its output per call, on the caller's
    thread."""

    def __init__(self, out_rate: int, out_channels: int):
        self.out_rate, self.out_channels = int(out_rate), int(out_channels)
        self.rate: int | None = None  # the stream's rate, once known
        self._rs = None
        self._skip = 0

    def convert(self, x: np.ndarray, rate: int | None = None) -> np.ndarray:
        """``x`` (float32, frames x channels) at ``rate`` (None: the feed's) in the feed's
        format; raises :class:`EngineError` on a channel count it cannot map or a rate change."""
        if rate is not None and (isinstance(rate, bool) or int(rate) != rate):
            raise EngineError(f"rate must be a whole number of Hz, got {rate!r}")
        rate = self.out_rate if rate is None else int(rate)
        if self.rate is None:
            if not MIN_RATE <= rate <= MAX_RATE:
                raise EngineError(f"rate must be {MIN_RATE}..{MAX_RATE} Hz, got {rate}")
            self.rate = rate
            if rate != self.out_rate:
                from ..dsp.resample import StreamingResampler

                self._rs = StreamingResampler(rate, self.out_rate, self.out_channels)
                self._skip = self._rs.latency_out
        elif rate != self.rate:
            raise EngineError(f"rate changed from {self.rate} Hz to {rate} Hz in the middle "
                              "of the stream")
        if x.shape[1] != self.out_channels:
            if self.out_channels != 1:
                raise EngineError(f"got {x.shape[1]} channels, the graph expects "
                                  f"{self.out_channels}")
            x = x.mean(axis=1, keepdims=True)
        if self._rs is None or not len(x):
            return x
        out = np.empty((self._rs.max_output(len(x)), self.out_channels), np.float32)
        y = out[: self._rs.process(np.ascontiguousarray(x, dtype=np.float32), out)]
        if self._skip:  # the filter's delay: the first output frames hold no input yet
            k = min(self._skip, len(y))
            self._skip -= k
            y = y[k:]
        return y

    def flush(self) -> np.ndarray:
        """The resampler's last output frames at the end of the stream (none without one)."""
        rs = self._rs
        if rs is None:
            return np.zeros((0, self.out_channels), np.float32)
        parts, out = [], np.empty((rs.latency_out + 64, self.out_channels), np.float32)
        while (n := rs.flush(out)) > 0:
            parts.append(out[:n].copy())
            if n < len(out):
                break
        tail = np.concatenate(parts) if parts else out[:0].copy()
        k = min(self._skip, len(tail))  # a stream shorter than the filter's delay
        self._skip -= k
        return tail[k:]


@register
class FeedSource(LiveSource):
    """Frames pushed with :meth:`push` from one application thread (the ring's single producer).

    The graph advances as audio arrives; ``end()`` lets it drain and finish. ``push`` waits
    while the ring is full (back-pressure: the graph consumes it), so no pushed audio is lost
    (a caller that must not wait, the web server's /ingest, drops and counts instead).
    With ``idle_fill_s`` > 0 the feed is live: after that long without audio the graph goes on
    with silence at the wall clock's pace (counted in ``zero_filled_frames``).
    """

    type_name = "source.feed"
    outputs = {"audio": AUDIO}
    ring_seconds = 30.0

    @dataclass(frozen=True)
    class Params:
        sample_rate: int = param(16000, gt=0, doc="rate of the pushed audio")
        channels: int = param(1, gt=0, le=64, doc="channels of the pushed audio")
        idle_fill_s: float = param(0.0, ge=0, le=60, doc="0: wait for audio; > 0: after this "
                                   "long without audio, go on with silence in real time")

    def __init__(self, node_id: str, params: Params):
        super().__init__(node_id, params)
        self.ended = False  #: end() was called: no more audio will come

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        return {"audio": self._spec(self.params.sample_rate, self.params.channels)}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        self._make_ring(specs["audio"])

    def push(self, x: np.ndarray, running: Callable[[], bool] = lambda: True) -> int:
        """Write ``x`` (frames x channels); waits for room while ``running()`` holds."""
        if x.shape[1] != self.params.channels:
            raise ValueError(f"feed() got {x.shape[1]} channels, the graph expects "
                             f"{self.params.channels}")
        if self.ended:
            raise EngineError("feed() after end_feed(): the stream has ended")
        ring = self.ring
        if ring is None:
            raise EngineError("feed() before start(): start the engine first")
        done = 0
        while done < len(x):
            room = ring.space
            if room == 0:
                if not running():
                    break
                time.sleep(0.002)
                continue
            done += ring.write(x[done:done + room])
        return done

    def end(self) -> None:
        self.ended = True

    def wait_more(self) -> bool:
        if self.ended:
            return False
        time.sleep(0.001)
        fill = self.params.idle_fill_s
        if fill <= 0:
            return True
        # silence at the wall clock's pace since the audio stopped (as source.microphone does)
        return self._idle_s() <= fill or not self._silence_due()

    def process(self, io: NodeIO) -> None:
        assert self.ring is not None
        # the last frames of an ended feed end the stream: no silence after them (a short
        # block is otherwise a live feed's idle gap, which LiveSource fills)
        if self.ended and self.ring.available <= min(io.frames, len(io.out("audio"))):
            self.finished = True
        super().process(io)
