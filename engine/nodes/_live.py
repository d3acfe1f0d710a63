"""Shared base of live sources (microphone, application feed): a ring the DSP thread drains."""

from __future__ import annotations

import math
import time

from ..node import AudioSpec, Node, NodeIO
from ..ring import AudioRing


class LiveSource(Node):
    """A source whose frames arrive from another thread through an :class:`AudioRing`.

    The runtime asks ``available()`` before each quantum and calls ``wait_more()`` (which
    sleeps briefly) until enough frames are there; ``wait_more`` returning False means "stop
    waiting" (the stream stalled or ended) and ``process`` then delivers what it has.
    """

    is_source = True
    ring_seconds = 4.0

    def __init__(self, node_id: str, params):
        super().__init__(node_id, params)
        self.ring: AudioRing | None = None
        self.finished = False
        self.zero_filled = 0
        self._last_seen = 0  # ring.frames_written at the last look
        self._last_change = 0.0  # wall-clock time audio last arrived (0: not looked yet)
        self._idle_zero = 0  # zero_filled then
        self.late_deliveries = 0  # audio that came after a gap of more than 0.5 s
        self.longest_gap_s = 0.0

    def _spec(self, rate: int, channels: int) -> AudioSpec:
        return AudioSpec(rate, channels, math.ceil(rate * self.quantum_s) + 1)

    def _make_ring(self, spec: AudioSpec) -> None:
        self.ring = AudioRing(int(spec.sample_rate * self.ring_seconds), spec.channels)

    def available(self) -> int:
        return self.ring.available if self.ring is not None else 0

    def wait_more(self) -> bool:
        time.sleep(0.001)
        return True

    def _idle_s(self) -> float:
        """Seconds since audio last arrived in the ring; 0.0 on a look that finds new audio
        (the first look starts the count)."""
        w = self.ring.frames_written if self.ring is not None else 0
        now = time.monotonic()
        if w != self._last_seen or not self._last_change:
            if self._last_change and self._last_seen:  # the first audio is not late
                gap = now - self._last_change
                self.longest_gap_s = max(self.longest_gap_s, gap)
                self.late_deliveries += gap > 0.5
            self._last_seen, self._last_change = w, now
            self._idle_zero = self.zero_filled
            return 0.0
        return now - self._last_change

    def _silence_due(self) -> bool:
        """While no audio comes: True when the silence delivered since audio last arrived has
        fallen behind the wall clock, so the next quantum should be silence; this keeps the
        audio clock in step with the room."""
        rate = self.params.sample_rate
        due = (time.monotonic() - self._last_change) * rate
        ahead = self.zero_filled - self._idle_zero + self.quantum_s * rate
        return ahead <= due

    def process(self, io: NodeIO) -> None:
        assert self.ring is not None
        out = io.out("audio")
        want = min(io.frames, len(out))
        got = self.ring.read_into(out[:want])
        if got < want and not self.finished:
            out[got:want] = 0  # keep the clock running through a stall
            self.zero_filled += want - got
            got = want
        io.produced("audio", got)

    def stats(self) -> dict:
        r = self.ring
        return {"ring_overflow_frames": r.overflows if r else 0,
                "zero_filled_frames": self.zero_filled, "late_deliveries": self.late_deliveries,
                "longest_gap_s": round(self.longest_gap_s, 3)}
