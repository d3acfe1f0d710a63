"""``sink.speaker``: play audio on a PortAudio output device."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..backends import get_backend
from ..events import StreamStatus
from ..node import AUDIO, EVENTS, AudioSpec, Node, NodeIO, param, register
from ..ring import AudioRing
from ._device import DeviceStream


@register
class Speaker(DeviceStream, Node):
    """Writes each block into a ring that the PortAudio output callback drains; the callback
    zero-fills and counts an underflow when the ring runs dry. Playback starts once
    ``prime_ms`` of audio is buffered, so the first blocks do not underflow. In a run faster
    than real time the node waits for room in the ring (the speaker paces the graph).

    A device that stops pulling for a moment (a Bluetooth or USB hiccup, a sound server busy
    elsewhere, or starting up: PulseAudio's null sink takes up to 2 s) leaves the audio the
    graph made meanwhile in the ring; by default it all plays, late, and everything after it
    stays that late (up to ``ring_s``). Where being in step matters more than playing every
    sample (an assistant's reply, whose barge-in stop would be heard seconds late), set
    ``max_latency_ms``: once more than that waits beyond the block the device asks for, the
    output callback skips the oldest down to ``prime_ms`` beyond it (moving the ring's read
    index: no copy; a device that pulls large blocks is not cut in steady state), counted in
    ``skipped_frames`` and reported as an ``engine.xrun`` of kind ``output_skipped``. Not in a
    run faster than real time, where the speaker paces the graph and its ring is meant to be
    full.

    If the device stops pulling audio for ``stall_timeout_s`` (unplugged, suspended, sound
    server restarted), the graph goes on (what cannot be played is dropped and counted), the
    node reports an ``engine.xrun`` event of kind ``stall`` on ``status``, reopens the device in
    the background (dropping the audio queued for the dead one, so playback resumes where the
    graph is) and reports ``recovered`` (``count`` = frames dropped meanwhile) once the new
    stream plays."""

    type_name = "sink.speaker"
    inputs = {"audio": AUDIO}
    outputs = {"status": EVENTS}

    @dataclass(frozen=True)
    class Params:
        device: str = param("default", doc="output device name (substring), index or default")
        block: int = param(0, ge=0, le=16384, doc="frames per callback (0: PortAudio picks)")
        latency: str = param("low", choices=("low", "high"),
                             doc="PortAudio latency hint (sounddevice backend)")
        backend: str = param("sounddevice", choices=("sounddevice", "pyaudio"),
                             doc="audio backend")
        prime_ms: float = param(40.0, ge=0, le=2000, doc="audio buffered before playback")
        ring_s: float = param(2.0, gt=0, le=60, doc="output ring length in seconds")
        max_latency_ms: float = param(0.0, ge=0, le=60000,
                                      doc="more audio than this waiting (the device stalled "
                                          "a moment): skip the oldest, down to prime_ms "
                                          "(0: never, everything plays, late if need be)")
        stall_timeout_s: float = param(5.0, gt=0, doc="no callback for this long: the device "
                                                      "is considered lost and reopened")


    def __init__(self, node_id: str, params: Params):
        super().__init__(node_id, params)
        self.stream = None
        self.ring: AudioRing | None = None
        self.dropped = 0
        self._seen_stream = None
        self._seen_count = 0
        self._last_change = 0.0
        self._stalled = False
        self._stall_dropped = 0
        self._stopping = False
        self.discarded = 0  # frames queued for a lost device, dropped when it was reopened
        self._glitch_report = 0.0
        self._under_seen = 0
        self._dropped_seen = 0
        self._skipped_seen = 0

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        return {}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        s = specs["audio"]
        p = self.params
        self.ring = AudioRing(int(s.sample_rate * p.ring_s), s.channels)
        self._rate = s.sample_rate
        self._channels = s.channels
        self.stream = self._open()

    @classmethod
    def validate_params(cls, p: Params) -> list[str]:
        if p.max_latency_ms and p.max_latency_ms < p.prime_ms + 50:
            return [f"max_latency_ms: must be at least prime_ms + 50 ({p.prime_ms + 50:g}) or "
                    f"0 (never skip), got {p.max_latency_ms:g}"]
        if p.max_latency_ms > p.ring_s * 1000:
            return [f"max_latency_ms: the ring holds {p.ring_s:g} s (ring_s), got "
                    f"{p.max_latency_ms:g} ms: raise ring_s or lower max_latency_ms"]
        return []

    def _open(self):
        p = self.params
        prime = int(self._rate * p.prime_ms / 1000)
        limit = int(self._rate * p.max_latency_ms / 1000) if self.engine_realtime else 0
        return get_backend(p.backend).open_output(p.device, self._rate, self._channels, p.block,
                                                  self.ring, p.latency, prime,
                                                  (limit, max(prime, 1)))

    def _reopen(self):
        """(reopen thread, while no stream reads the ring) Drop the audio queued for the lost
        device, so that playback resumes where the graph is rather than seconds behind."""
        self.discarded += self.ring.available
        self.ring.clear()
        return self._open()

    def start(self) -> None:
        self.stream.start()
        self._last_change = time.monotonic()

    def process(self, io: NodeIO) -> None:
        x = io.audio("audio")
        ring = self.ring
        if not self.engine_realtime:
            limit = self.params.stall_timeout_s
            while ring.space < len(x) and self.stream.active and not self._stalled:
                if not self._progress() and time.monotonic() - self._last_change > limit:
                    break  # the device stopped pulling: _watch reports it below
                time.sleep(0.002)
        before = ring.overflows
        ring.write(x)
        self.dropped += ring.overflows - before
        self._watch(io)
        self._report_glitches(io)

    def _report_glitches(self, io: NodeIO) -> None:
        """Underflows (the device played silence) and dropped audio (the ring was full) as
        ``engine.xrun`` events (``output_underflow`` / ``output_dropped``, ``count`` = the
        total so far), at most one of each per second."""
        now = time.monotonic()
        if now - self._glitch_report < 1.0 or self._stalled or self.stream is None:
            return
        at = io.start.get("audio", 0)
        under = self.stream.stats.output_underflows + (self._earlier or {}).get(
            "output_underflows", 0)
        for kind, total, seen in (("output_underflow", under, "_under_seen"),
                                  ("output_dropped", self.dropped, "_dropped_seen"),
                                  ("output_skipped", self.ring.skipped, "_skipped_seen")):
            if total > getattr(self, seen):
                setattr(self, seen, total)
                self._glitch_report = now
                io.emit("status", StreamStatus(at, self._rate, self.id, kind=kind, count=total))

    def _watch(self, io: NodeIO) -> None:
        """Notice a device that stopped pulling audio, and its return (DSP thread, O(1))."""
        at = io.start.get("audio", 0)
        if self._progress():
            if self._stalled:
                self._stalled = False
                lost = self.dropped + self.discarded - self._stall_dropped
                io.emit("status", StreamStatus(at, self._rate, self.id, kind="recovered",
                                               count=lost))
        elif not self._stalled and \
                time.monotonic() - self._last_change > self.params.stall_timeout_s:
            self._stalled = True
            self._stall_dropped = self.dropped + self.discarded
            io.emit("status", StreamStatus(at, self._rate, self.id, kind="stall"))
            self._reopen_in_background(self._reopen,
                                       lambda: self._stalled and not self._stopping)

    def _progress(self) -> bool:
        """True when the current stream has called back since the last look."""
        s = self.stream
        if s is not self._seen_stream:
            self._seen_stream, self._seen_count = s, 0
        count = s.stats.count if s is not None else 0
        if count > self._seen_count:
            self._seen_count, self._last_change = count, time.monotonic()
            return True
        return False

    def flush(self, io: NodeIO) -> None:
        # let what is buffered play out (bounded wait)
        if self.stream is None or self.ring is None:
            return
        self.stream.stats.priming = 0
        t_end = time.monotonic() + self.ring.available / self._rate + 0.5
        while self.ring.available > 0 and time.monotonic() < t_end and self.stream.active:
            time.sleep(0.005)

    def stop(self) -> None:
        self._stopping = True
        if self.stream is not None:
            self.stream.stop()

    def stats(self) -> dict:
        d = {"dropped_frames": self.dropped + self.discarded}
        d.update(self._stream_stats())
        if self.ring is not None:
            d["ring_underflow_frames"] = self.ring.underflows
            d["skipped_frames"] = self.ring.skipped
        return d
