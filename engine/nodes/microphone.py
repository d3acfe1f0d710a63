"""``source.microphone``: live input from a PortAudio device (sounddevice or PyAudio)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..backends import get_backend
from ..errors import DeviceError
from ..events import StreamStatus
from ..node import AUDIO, EVENTS, AudioSpec, NodeIO, param, register
from ._device import DeviceStream
from ._live import LiveSource


@register
class Microphone(DeviceStream, LiveSource):
    """Captures ``device`` at ``sample_rate``. The PortAudio callback only copies into a
    preallocated ring (see :mod:`engine.backends`); this node drains it once per quantum.

    If the device stops delivering audio for ``stall_timeout_s`` (unplugged, suspended), the
    node keeps the graph's clock running with silence, reports an ``engine.xrun`` event of kind
    ``stall`` and tries to reopen the device in the background (every second) until it comes
    back; then it reports kind ``recovered`` (``count`` = frames of silence that stood in for
    the lost audio).

    A device can also deliver *late*: on a loaded machine PulseAudio's ALSA plugin has held
    capture back for 2-4 s and then delivered it at once. The default timeout (5 s) and the
    10 s ring are sized so that such late audio arrives whole instead of being taken for a lost
    device (with 2 s, a trial under heavy load lost 24 s of 90 to reopening). The stats count
    these gaps (``late_deliveries``: gaps over 0.5 s, ``longest_gap_s``).
    """

    ring_seconds = 10.0

    type_name = "source.microphone"
    outputs = {"audio": AUDIO, "status": EVENTS}

    @dataclass(frozen=True)
    class Params:
        device: str = param("default", doc="device name (substring), index, or 'default'")
        sample_rate: int = param(48000, gt=0, le=384000, doc="capture rate in Hz")
        channels: int = param(1, gt=0, le=64, doc="channels to capture")
        block: int = param(480, ge=0, le=16384, doc="frames per callback (0: PortAudio picks)")
        latency: str = param("low", choices=("low", "high"),
                             doc="PortAudio latency hint (sounddevice backend)")
        backend: str = param("sounddevice", choices=("sounddevice", "pyaudio"),
                             doc="audio backend")
        stall_timeout_s: float = param(5.0, gt=0, doc="no audio for this long: the device is "
                                       "considered lost, silence stands in, it is reopened")

    def __init__(self, node_id: str, params: Params):
        super().__init__(node_id, params)
        self.stream = None
        self._stalled = False
        self._overflows_reported = 0
        self._dropped_reported = 0  # ring overflow frames when last reported
        self._dropped_at = -(1 << 62)  # audio position of that report
        self._stall_reported = False
        self._stall_zero = 0  # zero_filled when the stall began

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        return {"audio": self._spec(self.params.sample_rate, self.params.channels)}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        self._make_ring(specs["audio"])
        self.stream = self._open()

    def _open(self):
        p = self.params
        return get_backend(p.backend).open_input(p.device, p.sample_rate, p.channels, p.block,
                                                 self.ring, p.latency)

    def start(self) -> None:
        assert self.stream is not None
        self.stream.start()
        rate = self.stream.samplerate
        if abs(rate - self.params.sample_rate) > 0.5:
            raise DeviceError(f"device granted {rate} Hz instead of {self.params.sample_rate} Hz")
        self._last_change = time.monotonic()

    def wait_more(self) -> bool:
        time.sleep(0.001)
        idle = self._idle_s()
        if idle == 0.0:  # audio arrived
            self._stalled = False
            return True
        if idle > self.params.stall_timeout_s:
            if not self._stalled:
                self._stalled = True
                self._stall_zero = self.zero_filled
                self._begin_reopen()
            # silence at the pace of the wall clock since the audio stopped (the first call
            # catches up the stall timeout)
            return not self._silence_due()
        return True

    def _begin_reopen(self) -> None:
        self._reopen_in_background(self._open, lambda: self._stalled and not self.finished)

    def process(self, io: NodeIO) -> None:
        start = self.zero_filled
        super().process(io)
        s = self.stream.stats if self.stream is not None else None
        if s is not None and s.input_overflows != self._overflows_reported:
            io.emit("status", StreamStatus(io.start.get("audio", 0), self.params.sample_rate,
                                           self.id, kind="input_overflow",
                                           count=s.input_overflows))
            self._overflows_reported = s.input_overflows
        # the graph fell behind real time and the ring overflowed: audio lost without a device
        # error (a node too slow); said when it starts, then at most every 5 s of audio
        dropped = self.ring.overflows if self.ring is not None else 0
        pos = io.start.get("audio", 0)
        rate = self.params.sample_rate
        if dropped > self._dropped_reported and pos - self._dropped_at >= 5 * rate:
            io.emit("status", StreamStatus(pos, rate, self.id, kind="input_dropped",
                                           count=dropped))
            self._dropped_reported, self._dropped_at = dropped, pos
        if self._stalled and not self._stall_reported:
            self._stall_reported = True
            io.emit("status", StreamStatus(io.start.get("audio", 0), self.params.sample_rate,
                                           self.id, kind="stall", count=self.zero_filled - start))
        elif not self._stalled and self._stall_reported:
            self._stall_reported = False
            io.emit("status", StreamStatus(io.start.get("audio", 0), self.params.sample_rate,
                                           self.id, kind="recovered",
                                           count=self.zero_filled - self._stall_zero))

    def capture_lag_s(self) -> float:
        """(DSP thread) How long ago the last sample read was captured: the device's granted
        input latency plus what is still waiting in the ring."""
        s, r = self.stream, self.ring
        if s is None or r is None:
            return 0.0
        return float(s.latency) + r.available / self.params.sample_rate

    def stop(self) -> None:
        self.finished = True
        self._stalled = False
        if self.stream is not None:
            self.stream.stop()

    def stats(self) -> dict:
        d = super().stats()
        d.update(self._stream_stats())
        return d
