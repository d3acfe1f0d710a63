"""``dsp.echo_cancel``: acoustic echo cancellation, so a microphone can listen while a
loudspeaker plays (WebRTC's AEC3).

Inputs: ``audio``, the microphone (mono), and ``reference``, what the graph sends to the
loudspeaker (wire it to the same port as the ``sink.speaker``). The output is the microphone
with the loudspeaker's echo removed: a voice assistant can hear the user talk over its reply
(barge-in) instead of going deaf while it speaks. Without echo, the signal passes through,
but for the high-pass filter AEC3 needs (under about 80 Hz) and, at 48 kHz, what is above about
16 kHz (AEC3 works on the band under it).

The canceller is WebRTC's AEC3 (the one browsers run for calls), through the ``livekit``
package's ``AudioProcessingModule`` (``pip install 'audio-engine[aec]'``). It finds the echo's
delay itself, up to about 0.5 s between the reference and the echo in the microphone (the
speaker's buffer plus both devices' latency; ``reference_delay_ms`` takes a known part of a
longer one), and adapts to the room. Measured (``tools/bench/bench_echo_cancel.py``, synthetic
rooms, real speech; BENCHMARKS.md): 33-51 dB less echo after the first 2 s in rooms up to an
RT60 of 0.4 s, 22-25 dB at 0.6 s, 8-48 dB during the first 2 s of the first reply.

What it costs: a voice that overlaps the echo (double talk) is ducked by AEC3's suppressor: the
words a user says over the reply are often lost (in a barge-in, those said before the reply
stops, 0.3-0.6 s; over a whole utterance at equal level the recogniser's error rate doubles),
and what follows is clean.

Rates: 8, 16, 32 or 48 kHz, the reference at the microphone's rate (a multichannel reference is
averaged to mono). Audio goes through in 10 ms frames (AEC3's) and the output is the same stream
whatever the block size. It lags the input by AEC3's own delay (``LATENCY``: 8-11 ms, 6 ms more
with ``noise_suppression``; declared as ``latency_samples``: output sample n is input sample
n - latency_samples); blocks that are not whole frames also wait up to a frame for the rest of
theirs.

Control: ``Engine.set("aec", bypass=True)`` passes the microphone through untouched (delayed
as much, so that the timing does not move) from the next quantum: a headset was plugged in, no
echo to cancel, and AEC3 would still duck a voice that overlaps the reply while it has found no
echo path. ``bypass=False`` starts a fresh canceller, which adapts to the room again. The
``bypass`` parameter is where it starts.

Real-time rules: runs on the DSP thread (about 0.07 ms of CPU per 10 ms frame at 48 kHz: the
call into the native library releases the GIL). ``process`` moves samples through preallocated
FIFOs and int16 frame buffers with slice copies; the per-frame call builds a small request
object (no audio is copied to make it). ``stats()`` reports ``echo_reduction_db``: microphone
energy in over energy out while the reference played, which is how much the echo was reduced
when only the reply sounded (a user talking over it counts as output too and lowers it).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ModelError, NegotiationError, ParamError
from ..node import AUDIO, AudioSpec, Node, NodeIO, param, register, require_mono, require_rate

RATES = (48000, 16000, 32000, 8000)
INSTALL = "pip install 'audio-engine[aec]' (the livekit package)"
#: AEC3's delay from microphone in to out, in samples per rate (measured: noise in, the
#: reference silent; tests/test_echo_cancel.py checks it); the noise suppressor adds 6 ms
LATENCY = {8000: 88, 16000: 128, 32000: 260, 48000: 430}
NS_LATENCY_MS = 6
#: a reference frame quieter than this (RMS, full scale 1.0) is "not playing" in the statistics
ACTIVE_RMS = 10 ** (-60 / 20)


def _load_apm():
    try:
        from livekit import rtc
    except ImportError as exc:
        raise ModelError(f"dsp.echo_cancel needs the livekit package: {INSTALL}") from exc
    return rtc


@register
class EchoCancel(Node):
    """Removes the loudspeaker's echo (``reference``) from the microphone (``audio``): AEC3."""

    type_name = "dsp.echo_cancel"
    inputs = {"audio": AUDIO, "reference": AUDIO}
    outputs = {"audio": AUDIO}

    @dataclass(frozen=True)
    class Params:
        noise_suppression: bool = param(False, doc="also WebRTC's noise suppressor (changes "
                                        "the speech the recogniser hears; off by default)")
        reference_delay_ms: float = param(0.0, ge=0, le=2000, doc="delay the reference by this "
                                          "much first (a known part of an echo delay beyond "
                                          "the 0.5 s AEC3 searches)")
        bypass: bool = param(False, doc="pass the microphone through (a control too: "
                             "Engine.set(id, bypass=True/False))")

    @classmethod
    def validate_params(cls, p: Params) -> list[str]:
        try:
            missing = importlib.util.find_spec("livekit.rtc") is None
        except (ImportError, ValueError):  # a broken or blocked install
            missing = True
        if missing:
            return [f"needs the livekit package, which is not installed: {INSTALL}"]
        return []

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        mic, ref = inputs["audio"], inputs["reference"]
        require_mono(self.id, "audio", mic)
        require_rate(self.id, "audio", mic, RATES)
        if ref.sample_rate != mic.sample_rate:
            raise NegotiationError(
                f"{self.id}.reference needs the microphone's rate ({mic.sample_rate} Hz), got "
                f"{ref.sample_rate} Hz: add a dsp.resample with rate = {mic.sample_rate} "
                f"before it")
        self._frame = mic.sample_rate // 100
        self.latency_samples = LATENCY[mic.sample_rate] + (
            mic.sample_rate * NS_LATENCY_MS // 1000 if self.params.noise_suppression else 0)
        self._delay = int(round(self.params.reference_delay_ms * mic.sample_rate / 1000))
        block = max(mic.max_block, ref.max_block)
        self._cap = 2 * block + self._frame + self._delay + self.latency_samples + 64
        # whatever the FIFO holds can come out in one call (the flush adds AEC3's delay)
        return {"audio": AudioSpec(mic.sample_rate, 1, self._cap + self.latency_samples,
                                   latency_s=mic.latency_s)}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        self._rtc = _load_apm()
        self._rate = specs["audio"].sample_rate
        self._ref_channels = specs["reference"].channels
        f = self._frame
        self._mic = np.zeros(self._cap, np.float32)
        self._ref = np.zeros(self._cap, np.float32)
        self._ref_mono = np.zeros(self._cap, np.float32)
        # int16 frames the native code reads and writes in place (bytearrays: writable)
        self._mic_bytes = bytearray(2 * f)
        self._ref_bytes = bytearray(2 * f)
        self._mic16 = np.frombuffer(self._mic_bytes, np.int16)
        self._ref16 = np.frombuffer(self._ref_bytes, np.int16)
        self._tmp = np.zeros(f, np.float32)
        # the microphone's last frames, kept in both modes: bypassed, the output is read from
        # here delayed as much as AEC3 delays it (the timing stays put); switched back on, a
        # fresh canceller is first run over them so that it continues where the bypass was
        self._hist_len = -(-self.latency_samples // f) * f
        self._line = np.zeros(self._hist_len + self._cap, np.float32)
        self._apm = None
        self.reset()

    def _new_apm(self):
        return self._rtc.AudioProcessingModule(
            echo_cancellation=True, noise_suppression=self.params.noise_suppression,
            high_pass_filter=True, auto_gain_control=False)

    def reset(self) -> None:
        self._bypass = self.params.bypass
        self._apm = None if self._bypass else self._new_apm()
        self._mic_fill = 0
        self._line[:] = 0.0
        self._ref[:] = 0.0
        self._ref_fill = self._delay  # the delay is silence already in the FIFO
        self._frames = 0
        self._active_frames = 0
        self._e_in = 0.0  # microphone energy in / out while the reference plays
        self._e_out = 0.0
        self._overflow = 0

    # -- FIFOs ---------------------------------------------------------------------------
    def _push(self, io: NodeIO) -> None:
        if io.has_audio("audio"):
            x = io.audio("audio")
            self._mic_fill = self._append(self._mic, self._mic_fill, x[:, 0])
        if io.has_audio("reference"):
            r = io.audio("reference")
            if self._ref_channels > 1:
                np.mean(r, axis=1, out=self._ref_mono[:len(r)])
                src = self._ref_mono[:len(r)]
            else:
                src = r[:, 0]
            self._ref_fill = self._append(self._ref, self._ref_fill, src)

    def _append(self, buf: np.ndarray, fill: int, x: np.ndarray) -> int:
        """Append x to a FIFO; returns the new fill. Both inputs come from one clock, so one
        cannot run ahead of the other by more than a block; if it ever did, the oldest frames
        go (counted in ``fifo_overflow_frames``) rather than the node failing."""
        n = len(x)
        if fill + n > len(buf):
            drop = fill + n - len(buf)
            self._overflow += drop
            buf[:fill - drop] = buf[drop:fill]
            fill -= drop
        buf[fill:fill + n] = x
        return fill + n

    @staticmethod
    def _to16(x: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> None:
        np.multiply(x, 32768.0, out=tmp)
        np.clip(tmp, -32768.0, 32767.0, out=tmp)
        np.rint(tmp, out=tmp)
        out[:] = tmp

    def _cancel(self, ref: np.ndarray, mic: np.ndarray) -> None:
        """One 10 ms frame through AEC3: the reference, then the microphone; the result is left
        in ``self._mic16``."""
        f, rtc = self._frame, self._rtc
        self._to16(ref, self._ref16, self._tmp)
        self._apm.process_reverse_stream(rtc.AudioFrame(self._ref_bytes, self._rate, 1, f))
        self._to16(mic, self._mic16, self._tmp)
        self._apm.process_stream(rtc.AudioFrame(self._mic_bytes, self._rate, 1, f))

    def _run_frames(self, out: np.ndarray, frames: int) -> int:
        """Cancel ``frames`` whole frames from the FIFOs into ``out``; returns samples written."""
        f = self._frame
        h, n = self._hist_len, frames * f
        line = self._line
        line[h:h + n] = self._mic[:n]
        if self._bypass:
            a = h - self.latency_samples
            out[:n, 0] = line[a:a + n]
        for k in range(0 if self._bypass else frames):
            a = k * f
            ref, mic = self._ref[a:a + f], self._mic[a:a + f]
            self._cancel(ref, mic)
            o = out[a:a + f, 0]
            np.multiply(self._mic16, 1.0 / 32768.0, out=o)
            if float(np.dot(ref, ref)) > ACTIVE_RMS * ACTIVE_RMS * f:
                self._active_frames += 1
                self._e_in += float(np.dot(mic, mic))
                self._e_out += float(np.dot(o, o))
        line[:h] = line[n:n + h]
        self._frames += frames
        for buf, attr in ((self._mic, "_mic_fill"), (self._ref, "_ref_fill")):
            fill = getattr(self, attr)
            buf[:fill - n] = buf[n:fill]
            setattr(self, attr, fill - n)
        return n

    def process(self, io: NodeIO) -> None:
        self._push(io)
        frames = min(self._mic_fill, self._ref_fill) // self._frame
        io.produced("audio", self._run_frames(io.out("audio"), frames))

    def flush(self, io: NodeIO) -> None:
        """The rest, then AEC3's delay of silence, so that the output has the input's length
        plus ``latency_samples`` (as a resampler's does): nothing the microphone heard stays
        inside the canceller."""
        self._push(io)
        lat = self.latency_samples
        self._mic[self._mic_fill:self._mic_fill + lat] = 0.0
        self._mic_fill += lat
        if self._ref_fill < self._mic_fill:  # a reference that ended first: silence after it
            self._ref[self._ref_fill:self._mic_fill] = 0.0
            self._ref_fill = self._mic_fill
        out = io.out("audio")
        n = self._run_frames(out, self._mic_fill // self._frame)
        rest = self._mic_fill
        if rest:  # the last partial frame: completed with silence, only the real part kept
            f = self._frame
            self._mic[rest:f] = 0.0
            self._ref[self._ref_fill:f] = 0.0
            self._ref_fill = self._mic_fill = f
            tail = np.zeros((f, 1), np.float32)
            self._run_frames(tail, 1)
            out[n:n + rest] = tail[:rest]
            n += rest
        io.produced("audio", n)

    def check_control(self, values: dict[str, Any]) -> None:
        bad = [f"{k} = {v!r}" for k, v in values.items()
               if k != "bypass" or not isinstance(v, bool)]
        if bad or not values:
            raise ParamError(f"{self.id}: controls take bypass = True/False, got "
                             f"{', '.join(bad) or 'nothing'}")

    def control(self, values: dict[str, Any]) -> None:
        """``bypass`` (a boolean), from the runtime between blocks on the DSP thread. Coming
        back on, a fresh canceller (about 0.4 ms to create; it adapts to the room again) is
        first run over the microphone's last frames, its output thrown away, so that what it
        holds back is what the bypass had not yet let out: no gap, no repeat."""
        self.check_control(values)
        on = not values["bypass"]
        if on and self._apm is None:
            self._apm = self._new_apm()
            f = self._frame
            silent = np.zeros(f, np.float32)
            for a in range(0, self._hist_len, f):
                self._cancel(silent, self._line[a:a + f])
        elif not on:
            self._apm = None
        self._bypass = not on

    def close(self) -> None:
        self._apm = None

    def stats(self) -> dict[str, Any]:
        red = (10 * math.log10(self._e_in / self._e_out)
               if self._e_out > 0 and self._e_in > 0 else None)
        return {"frames": self._frames, "bypass": self._bypass,
                "reference_active_s": round(self._active_frames * self._frame / self._rate, 2),
                "echo_reduction_db": None if red is None else round(red, 1),
                "fifo_overflow_frames": self._overflow}
