"""Fixed-size windows from arbitrary block sizes (pedalboard's ``FixedBlockSize`` idea).

Nodes whose model needs exact windows (Silero's 512 samples, webrtcvad's 10/20/30 ms frames,
YAMNet's 96-frame patches) push whatever block the host gives them and get back complete windows.
Output therefore never depends on the host block size.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class FixedWindows:
    """Collect mono/multichannel frames into windows of ``size`` frames advancing by ``hop``.

    ``push(x)`` yields each complete window as a view of an internal preallocated buffer; the view
    is only valid until the next iteration. ``context`` frames of history are kept in front of each
    window (Silero's 64-sample context): the yielded array has ``context + size`` frames.
    ``index`` is the absolute frame index of the first (non-context) frame of the last window.
    """

    def __init__(self, size: int, channels: int = 1, hop: int | None = None, context: int = 0,
                 dtype=np.float32):
        if size <= 0:
            raise ValueError("size must be > 0")
        self.size = int(size)
        self.hop = int(hop or size)
        self.context = int(context)
        self.channels = channels
        self._span = self.context + self.size
        # room for one span plus one hop of slack; compaction is a memmove of at most span frames
        self._buf = np.zeros((self._span + max(self.hop, self.size) * 4, channels), dtype=dtype)
        self.reset()

    def reset(self) -> None:
        self._buf[:] = 0
        self._fill = self.context  # context starts as zeros
        self._next_index = 0  # absolute index of the first frame of the next window
        self.index = 0

    @property
    def pending(self) -> int:
        """Frames buffered that are not yet part of a yielded window."""
        return self._fill - self.context

    def push(self, x: np.ndarray) -> Iterator[np.ndarray]:
        if x.ndim == 1:
            x = x[:, None]
        n = len(x)
        pos = 0
        buf = self._buf
        cap = len(buf)
        while pos < n:
            take = min(n - pos, cap - self._fill)
            buf[self._fill:self._fill + take] = x[pos:pos + take]
            self._fill += take
            pos += take
            while self._fill >= self._span:
                self.index = self._next_index
                yield buf[: self._span]
                # advance by hop: keep the last (span - hop) frames
                keep = self._fill - self.hop
                buf[:keep] = buf[self.hop:self._fill]
                self._fill = keep
                self._next_index += self.hop

    def tail(self) -> np.ndarray:
        """The incomplete window at end of stream, zero-padded to full size (for ``flush``)."""
        out = self._buf[: self._span].copy()
        out[self._fill:] = 0
        return out
