"""Counters that audio callbacks update without allocating (shared by both backends)."""

from __future__ import annotations

import time

import numpy as np


class CallbackStats:
    """Per-stream status written only by the audio callback.

    ``durations`` is a preallocated ring of the last 4096 callback durations in seconds;
    everything else is a plain counter. Readers (stats, tests) only read.
    """

    SIZE = 4096

    def __init__(self) -> None:
        self.durations = np.zeros(self.SIZE, np.float64)
        self.count = 0
        self.input_overflows = 0
        self.input_underflows = 0
        self.output_underflows = 0
        self.output_overflows = 0
        self.priming = 0
        #: output: with more than ``backlog_limit`` frames buffered beyond what the callback
        #: is about to read (the device stalled for a moment and the graph went on), skip the
        #: oldest down to ``backlog_keep`` beyond it (0: never). Relative to the call's frame
        #: count, so a device that pulls large blocks is not cut in steady state
        self.backlog_limit = 0
        self.backlog_keep = 0
        self.frames = 0
        self.last_stream_time = 0.0
        self.last_callback_wall = 0.0
        self.clock = time.perf_counter

    def record(self, t0: float, frames: int, stream_time: float) -> None:
        """End of a callback that started at ``t0``: count it, time it (no allocation)."""
        self.frames += frames
        self.last_stream_time = stream_time
        self.last_callback_wall = t0
        self.durations[self.count & (self.SIZE - 1)] = self.clock() - t0
        self.count += 1

    def p99_ms(self) -> float:
        n = min(self.count, self.SIZE)
        if n == 0:
            return 0.0
        return float(np.percentile(self.durations[:n], 99) * 1e3)

    def mean_ms(self) -> float:
        n = min(self.count, self.SIZE)
        return float(self.durations[:n].mean() * 1e3) if n else 0.0

    def as_dict(self) -> dict:
        return {
            "callbacks": self.count,
            "input_overflows": self.input_overflows,
            "input_underflows": self.input_underflows,
            "output_underflows": self.output_underflows,
            "output_overflows": self.output_overflows,
            "callback_mean_ms": round(self.mean_ms(), 4),
            "callback_p99_ms": round(self.p99_ms(), 4),
        }
