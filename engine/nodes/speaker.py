"""``sink.speaker``: play audio on a PortAudio output device."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..backends import get_backend
from ..node import AUDIO, AudioSpec, Node, NodeIO, param, register
from ..ring import AudioRing
from ._device import DeviceStream


@register
class Speaker(DeviceStream, Node):
    """Writes each block into a ring that the PortAudio output callback drains; the callback
    zero-fills and counts an underflow when the ring runs dry. Playback starts once
    ``prime_ms`` of audio is buffered, so the first blocks do not underflow. In a run faster
    than real time the node waits for room in the ring (the speaker paces the graph)."""

    type_name = "sink.speaker"
    inputs = {"audio": AUDIO}

    @dataclass(frozen=True)
    class Params:
        device: str = param("default", doc="output device name (substring), index or default")
        block: int = param(0, ge=0, le=16384, doc="frames per callback (0: PortAudio picks)")
        latency: str = param("low", choices=("low", "high"))
        backend: str = param("sounddevice", choices=("sounddevice", "pyaudio"))
        prime_ms: float = param(40.0, ge=0, le=2000, doc="audio buffered before playback")
        ring_s: float = param(2.0, gt=0, le=60, doc="output ring length in seconds")

    engine_realtime = True

    def __init__(self, node_id: str, params: Params):
        super().__init__(node_id, params)
        self.stream = None
        self.ring: AudioRing | None = None
        self.dropped = 0

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        return {}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        s = specs["audio"]
        p = self.params
        self.ring = AudioRing(int(s.sample_rate * p.ring_s), s.channels)
        self._rate = s.sample_rate
        prime = int(s.sample_rate * p.prime_ms / 1000)
        self.stream = get_backend(p.backend).open_output(p.device, s.sample_rate, s.channels,
                                                         p.block, self.ring, p.latency, prime)

    def start(self) -> None:
        self.stream.start()

    def process(self, io: NodeIO) -> None:
        x = io.audio("audio")
        ring = self.ring
        if not self.engine_realtime:
            while ring.space < len(x) and self.stream.active:
                time.sleep(0.002)
        before = ring.overflows
        ring.write(x)
        self.dropped += ring.overflows - before

    def flush(self, io: NodeIO) -> None:
        # let what is buffered play out (bounded wait)
        if self.stream is None or self.ring is None:
            return
        self.stream.stats.priming = 0
        t_end = time.monotonic() + self.ring.available / self._rate + 0.5
        while self.ring.available > 0 and time.monotonic() < t_end and self.stream.active:
            time.sleep(0.005)

    def stop(self) -> None:
        if self.stream is not None:
            self.stream.stop()

    def stats(self) -> dict:
        d = {"dropped_frames": self.dropped}
        d.update(self._stream_stats())
        if self.ring is not None:
            d["ring_underflow_frames"] = self.ring.underflows
        return d
