"""Shared part of the nodes that own a PortAudio stream (microphone, speaker)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..backends import quiet_native_stderr
from ..errors import DeviceError


class DeviceStream:
    """Mixin: ``self.stream`` is a backend stream; its statistics outlive ``close``.

    :meth:`_reopen_in_background` serves both directions when a device is lost (unplugged,
    suspended, sound server restarted): a daemon thread closes the dead stream and opens a new
    one every ``RETRY_S`` until audio flows again. It never runs on the DSP thread or in a
    callback; the node keeps its clock (and the graph) running meanwhile.
    """

    stream = None
    _closed_stats: dict = {}
    _reopening = False
    reopens = 0
    reopen_attempts = 0
    #: counters of the streams replaced by reopening (the totals stay whole across reopens)
    _earlier: dict | None = None
    #: seconds between reopen attempts while the device is lost
    RETRY_S = 1.0

    def close(self) -> None:
        if self.stream is not None:
            self._closed_stats = self._stream_stats()
            self.stream.close()
            self.stream = None

    def _stream_stats(self) -> dict:
        s = self.stream
        if s is None:
            return self._closed_stats
        counts = s.stats.as_dict()
        for k, v in (self._earlier or {}).items():
            counts[k] = counts.get(k, 0) + v
        return {**counts, "device": s.device.name, "granted_rate": s.samplerate,
                "granted_latency_s": round(s.latency, 4), "reopens": self.reopens,
                "reopen_attempts": self.reopen_attempts}

    def _retire(self, old: Any) -> None:
        """Keep the counters of a stream that is being replaced."""
        earlier = dict(self._earlier or {})
        for k, v in old.stats.as_dict().items():
            if k in ("callbacks", "input_overflows", "input_underflows", "output_underflows",
                     "output_overflows"):
                earlier[k] = earlier.get(k, 0) + v
        self._earlier = earlier

    def _reopen_in_background(self, open_stream: Callable[[], Any],
                              still_lost: Callable[[], bool]) -> None:
        """Reopen the device on a daemon thread until ``still_lost()`` turns false (the node
        sees audio flow again) or the node stops. One such thread at a time."""
        if self._reopening:
            return
        self._reopening = True

        def work() -> None:
            try:
                while still_lost():
                    self.reopen_attempts += 1
                    try:
                        with quiet_native_stderr():
                            old = self.stream
                            if old is not None:
                                old.stop()
                                old.close()
                                self._retire(old)
                                self.stream = None
                            self.stream = open_stream()
                            self.stream.start()
                        self.reopens += 1
                        t0 = time.monotonic()
                        while time.monotonic() - t0 < 1.0 and still_lost():
                            time.sleep(0.05)
                    except DeviceError:
                        pass
                    if still_lost():
                        time.sleep(self.RETRY_S)
            finally:
                self._reopening = False

        threading.Thread(target=work, name=f"reopen-{getattr(self, 'id', 'device')}",
                         daemon=True).start()
