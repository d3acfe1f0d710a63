"""Shared part of the nodes that own a PortAudio stream (microphone, speaker)."""

from __future__ import annotations


class DeviceStream:
    """Mixin: ``self.stream`` is a backend stream; its statistics outlive ``close``."""

    stream = None
    _closed_stats: dict = {}

    def close(self) -> None:
        if self.stream is not None:
            self._closed_stats = self._stream_stats()
            self.stream.close()
            self.stream = None

    def _stream_stats(self) -> dict:
        s = self.stream
        if s is None:
            return self._closed_stats
        return {**s.stats.as_dict(), "device": s.device.name, "granted_rate": s.samplerate,
                "granted_latency_s": round(s.latency, 4)}
