"""Ring buffers for audio: :class:`AudioRing` between threads, :class:`HistoryRing` within one.

``AudioRing`` is a single-producer / single-consumer ring buffer for audio frames.

The audio callback is one side, the DSP thread the other. Each side only moves its own index
(``_w`` for the writer, ``_r`` for the reader); CPython's GIL makes each index update atomic, so
no lock is needed. The buffer is allocated once; ``write`` and ``read_into`` only copy (at most two
slice copies each, for the wrap-around) and never allocate audio memory.

Overflow policy: a writer that finds too little space writes what fits and counts the dropped
frames in ``overflows`` (newest frames are dropped: the reader is never disturbed).
"""

from __future__ import annotations

import numpy as np


class AudioRing:
    """Lock-free SPSC ring of ``capacity`` frames x ``channels`` float32."""

    def __init__(self, capacity: int, channels: int):
        self.capacity = int(capacity)
        self.channels = int(channels)
        self._buf = np.zeros((self.capacity, self.channels), np.float32)
        self._w = 0  # total frames ever written (only the writer changes it)
        self._r = 0  # total frames ever read (only the reader changes it)
        self.overflows = 0  # frames dropped because the ring was full
        self.underflows = 0  # frames zero-filled because the ring was empty
        self.skipped = 0  # frames the reader discarded to catch up (trim)

    @property
    def available(self) -> int:
        """Frames ready to read."""
        return self._w - self._r

    @property
    def space(self) -> int:
        return self.capacity - (self._w - self._r)

    @property
    def frames_written(self) -> int:
        return self._w

    @property
    def frames_read(self) -> int:
        return self._r

    def write(self, x: np.ndarray) -> int:
        """Writer side: copy ``x`` (frames x channels) in; returns frames written."""
        n = len(x)
        space = self.capacity - (self._w - self._r)
        if n > space:
            self.overflows += n - space
            n = space
        if n <= 0:
            return 0
        i = self._w % self.capacity
        first = min(n, self.capacity - i)
        self._buf[i:i + first] = x[:first]
        if first < n:
            self._buf[: n - first] = x[first:n]
        self._w += n  # publish after the copy
        return n

    def read_into(self, out: np.ndarray, zero_fill: bool = False) -> int:
        """Reader side: fill ``out`` with up to ``len(out)`` frames; returns frames read.

        With ``zero_fill`` the rest of ``out`` is zeroed and counted as underflow (output side).
        """
        want = len(out)
        n = min(want, self._w - self._r)
        if n > 0:
            i = self._r % self.capacity
            first = min(n, self.capacity - i)
            out[:first] = self._buf[i:i + first]
            if first < n:
                out[first:n] = self._buf[: n - first]
            self._r += n
        if zero_fill and n < want:
            out[n:] = 0
            self.underflows += want - n
        return n

    def clear(self) -> None:
        """Reader side: discard everything buffered."""
        self._r = self._w

    def trim(self, limit: int, keep: int) -> int:
        """Reader side: when more than ``limit`` frames wait, discard the oldest so that
        ``keep`` remain (O(1): the read index moves, nothing is copied); they are counted in
        ``skipped``. Returns the frames discarded."""
        n = self._w - self._r - keep
        if self._w - self._r <= limit or n <= 0:
            return 0
        self._r += n
        self.skipped += n
        return n


class HistoryRing:
    """The last ``capacity`` samples of a mono stream, addressed by absolute sample index
    (one thread: a node keeping audio it may need again, e.g. a VAD's pre-roll or a sound
    monitor's evidence clips). ``write`` and ``read_into`` copy at most two slices each and
    never allocate."""

    def __init__(self, capacity: int):
        self.buf = np.zeros(max(int(capacity), 1), np.float32)

    def write(self, x: np.ndarray, at: int) -> None:
        """Store ``x`` (1-D), whose first sample is stream sample ``at``; only the last
        ``capacity`` samples of a longer ``x`` are kept."""
        cap = len(self.buf)
        n = len(x)
        if n > cap:
            x, at, n = x[n - cap:], at + n - cap, cap
        i = at % cap
        first = min(n, cap - i)
        self.buf[i:i + first] = x[:first]
        if first < n:
            self.buf[:n - first] = x[first:n]

    def read_into(self, out: np.ndarray, a: int, b: int) -> int:
        """Copy stream samples ``[a, b)`` into ``out[:b - a]`` (1-D); returns ``b - a``. The
        caller keeps ``[a, b)`` within the last ``capacity`` samples written."""
        n = b - a
        if n <= 0:
            return 0
        cap = len(self.buf)
        i = a % cap
        first = min(n, cap - i)
        out[:first] = self.buf[i:i + first]
        if first < n:
            out[first:n] = self.buf[:n - first]
        return n

    def clear(self) -> None:
        self.buf[:] = 0.0
