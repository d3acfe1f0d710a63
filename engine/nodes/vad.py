"""Voice activity detection nodes: ``vad.silero`` and ``vad.webrtc``.

Both nodes cut the input into the windows their detector needs (with
:class:`~engine.dsp.fixed_block.FixedWindows`, so results never depend on the host block size),
turn each window into a speech probability, and run one hysteresis state machine
(:class:`~engine.dsp.vad_state.VadStateMachine`, Silero's rules and parameter names) over them.

Ports
-----
``audio`` (in)
    mono audio: 16000 or 8000 Hz for ``vad.silero``; 8000/16000/32000/48000 Hz for
    ``vad.webrtc``. Any other format is refused at load time with the fix (add a
    ``dsp.resample`` / ``dsp.mix``).
``mute`` (in, optional events)
    wire a ``source.playback`` node's events here (``mute = "reply.events"``) to stop hearing
    the assistant's own reply, which a microphone picks up when there is no echo cancellation:
    from each ``playback.started`` until ``mute_tail_ms`` after its ``playback.finished`` /
    ``playback.interrupted`` (the speaker's buffer, the sound card's round trip and the room's
    echo), every window counts as silence, so the reply starts no segment and gets no
    transcript; a segment already open ends as usual. Leave it unwired when the user wears a
    headset, so that talking over the reply (a barge-in) is heard. Counted in
    ``muted_windows``.

Controls (``Engine.set(node_id, ...)``, applied at the next quantum): ``listen = False`` makes
every window count as silence until ``listen = True`` (a mute button, push-to-talk: an open
segment ends as usual after ``min_silence_ms``); ``follow_playback = False`` ignores the
``mute`` port until set back to True (the user put a headset on and may now talk over a reply);
the ``follow_playback`` parameter is where it starts (False behind an echo canceller: full
duplex, with half duplex one ``Engine.set`` away when the echo still gets through). Full duplex,
``playback_min_speech_ms`` (when >= 0) replaces ``min_speech_ms`` for windows while a playback
plays (and ``mute_tail_ms`` after it), so that a barge-in is confirmed sooner than a turn.
``events`` (out)
    :class:`~engine.events.SpeechStarted` (``sample`` = onset including ``speech_pad_ms``) and
    :class:`~engine.events.SpeechStopped` (``sample`` = end including the pad,
    ``start_sample`` = its start), stamped on the input clock (``io.start["audio"]`` is the
    absolute index of the block's first frame); with ``emit_probability`` also one
    :class:`~engine.events.VadProbability` per window, stamped with the window's first sample.
``speech`` (out)
    only the speech: exactly the input samples ``[start, stop)`` of each segment, back to back,
    so a recogniser can slice it by the events' positions. Output length varies per block
    (``io.produced``); a segment's pre-roll (pad + the ``min_speech_ms`` it took to confirm it)
    comes out as one burst, so the port's ``max_block`` is ``max_block`` of the input plus the
    history ring (pad + min speech + min silence + 1 s + 4 windows: the longest a decision can
    wait, see :mod:`engine.dsp.vad_state`).

Timing: a start is reported once ``min_speech_ms`` of speech confirm it, a stop once
``min_silence_ms`` of silence confirm it; both carry the sample where they happened, so their
latency is measurable on the audio clock. ``latency_samples`` is one window (the adapter's fill);
the speech audio lags its input by at most one window while a segment is open.

Real-time rules: ``process`` accepts 0..max_block frames, writes into preallocated buffers (the
history ring and the output port), and per window does one model call plus O(1) Python. Silero's
``session.run`` (~80 us per 32 ms window, GIL released) is cheap enough for the DSP thread, which
lets its ``speech`` audio port feed a recogniser directly (worker nodes cannot feed audio
downstream); webrtcvad's C call (~5 us per frame) runs there too. A gap in the
input clock (a dropped block) closes an open segment where its audio ended and restarts the
detector, so events and speech audio stay consistent; it is counted in ``stats()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..dsp.fixed_block import FixedWindows
from ..dsp.vad_state import Boundary, VadStateMachine
from ..errors import ModelError, NegotiationError, ParamError
from ..events import SpeechStarted, SpeechStopped, VadProbability
from ..models.manifest import model_file
from ..node import (
    AUDIO,
    EVENTS,
    AudioSpec,
    Node,
    NodeIO,
    param,
    register,
    require_mono,
    require_rate,
)
from ..ring import HistoryRing


@dataclass(frozen=True)
class VadParams:
    """Hysteresis parameters shared by every VAD node (Silero's names and defaults)."""

    threshold: float = param(0.5, gt=0, lt=1, doc="speech starts at probability >= threshold")
    neg_threshold: float = param(-1.0, lt=1, doc="silence starts below this probability; "
                                                 "negative: threshold - 0.15")
    min_speech_ms: float = param(250.0, ge=0, le=10000,
                                 doc="shorter speech is ignored (delays SpeechStarted)")
    min_silence_ms: float = param(100.0, ge=0, le=10000,
                                  doc="silence that ends speech (delays SpeechStopped)")
    speech_pad_ms: float = param(30.0, ge=0, le=2000,
                                 doc="audio kept before and after each segment (pre-roll)")
    max_speech_s: float = param(math.inf, gt=0,
                                doc="split longer speech at its quietest point (inf: never)")
    min_silence_at_max_speech_ms: float = param(
        98.0, ge=0, doc="silences at least this long are preferred split points")
    emit_probability: bool = param(False, doc="emit a VadProbability event per window")
    mute_tail_ms: float = param(300.0, ge=0, le=5000,
                                doc="with the mute port wired: stay deaf this long after a "
                                    "playback ends (its echo still arrives)")
    follow_playback: bool = param(True, doc="with the mute port wired: be deaf while it plays "
                                  "(False: full duplex until Engine.set(id, "
                                  "follow_playback=True), e.g. behind an echo canceller)")
    playback_min_speech_ms: float = param(
        -1.0, ge=-1, le=10000, doc="with the mute port wired and follow_playback off: "
        "min_speech_ms while a playback plays (a barge-in confirmed sooner; -1: min_speech_ms)")


class _GatedVad(Node):
    """Common machinery: windows, state machine, events and the gated speech port."""

    inputs = {"audio": AUDIO, "mute": EVENTS}
    optional_inputs = frozenset({"mute"})
    outputs = {"events": EVENTS, "speech": AUDIO}
    rates: ClassVar[tuple[int, ...]] = ()

    Params = VadParams

    def __init__(self, node_id: str, params: Any):
        super().__init__(node_id, params)
        self.rate = 0
        self.window = 0
        self.context = 0
        self.capacity = 0
        self._sm: VadStateMachine | None = None
        self._fw: FixedWindows | None = None
        self._ring = HistoryRing(0)
        self._queue: list[Boundary] = []
        self._base: int | None = None  # absolute index of local frame 0 (windows count from it)
        self._end = 0  # absolute index one past the last frame received
        self._out_pos = 0  # speech port: every sample before this is released or discarded
        self._speaking = False  # speech port: inside a segment at _out_pos
        self._counts = {"windows": 0, "segments": 0, "max_speech_splits": 0,
                        "discontinuities": 0, "speech_samples": 0, "muted_windows": 0}
        # mute port: windows starting in [_mute_from, _mute_until) count as silence
        self._mute_from = math.inf
        self._mute_until = -math.inf
        self._listen = True  # controls (DSP thread): see the module docstring
        self._follow_playback = params.follow_playback

    # -- to be provided by subclasses
    def _geometry(self, rate: int) -> tuple[int, int]:
        """(window, context) in samples at ``rate``."""
        raise NotImplementedError

    def _load(self, rate: int) -> None:
        """Load the detector (called from ``prepare``)."""

    def _probability(self, win: np.ndarray) -> float:
        """Speech probability of the last ``window`` samples of ``win`` (1-D, with context)."""
        raise NotImplementedError

    def _reset_detector(self) -> None:
        """Clear the detector's recurrent state."""

    @classmethod
    def validate_params(cls, params: Any) -> list[str]:
        """Problems beyond single-parameter types and ranges (used by graph validation)."""
        problems = []
        if 0 <= params.neg_threshold and params.neg_threshold > params.threshold:
            problems.append(f"neg_threshold: must not exceed threshold ({params.threshold}), got "
                            f"{params.neg_threshold} (a negative value means threshold - 0.15)")
        if params.playback_min_speech_ms > params.min_speech_ms:
            problems.append(f"playback_min_speech_ms: must not exceed min_speech_ms "
                            f"({params.min_speech_ms:g}), got {params.playback_min_speech_ms:g} "
                            "(-1: the same)")
        return problems

    # -- lifecycle
    def _machine(self, rate: int, window: int) -> VadStateMachine:
        p = self.params
        try:
            return VadStateMachine(
                rate, window, threshold=p.threshold,
                neg_threshold=None if p.neg_threshold < 0 else p.neg_threshold,
                min_speech_ms=p.min_speech_ms, min_silence_ms=p.min_silence_ms,
                speech_pad_ms=p.speech_pad_ms, max_speech_s=p.max_speech_s,
                min_silence_at_max_speech_ms=p.min_silence_at_max_speech_ms)
        except ValueError as e:
            raise NegotiationError(f"{self.id} ({self.type_name}): {e}: fix its params") from None

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        spec = inputs.get("audio")
        if spec is None:
            raise NegotiationError(f"{self.id}.audio is not connected: connect a mono source "
                                   f"at {self.rates[0]} Hz")
        require_mono(self.id, "audio", spec)
        require_rate(self.id, "audio", spec, self.rates)
        window, _ = self._geometry(spec.sample_rate)
        sm = self._machine(spec.sample_rate, window)
        cap = spec.max_block + sm.max_undecided
        return {"speech": AudioSpec(spec.sample_rate, 1, cap)}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        spec = specs["audio"]
        self.rate = spec.sample_rate
        self.window, self.context = self._geometry(self.rate)
        self._sm = self._machine(self.rate, self.window)
        p = self.params
        #: the state machine's min_speech (samples) outside / during a playback
        self._min_speech = (self._sm.min_speech, self._sm.min_speech if
                            p.playback_min_speech_ms < 0 else
                            int(round(p.playback_min_speech_ms * self.rate / 1000)))
        self.capacity = self.negotiate({"audio": spec})["speech"].max_block
        self._ring = HistoryRing(self.capacity)
        self._fw = FixedWindows(self.window, 1, context=self.context)
        self.latency_samples = self.window
        self._load(self.rate)
        self.reset()

    def reset(self) -> None:
        if self._fw is not None:
            self._fw.reset()
        if self._sm is not None:
            self._sm.reset()
        self._reset_detector()
        self._queue.clear()
        self._base = None
        self._end = 0
        self._out_pos = 0
        self._speaking = False
        self._mute_from = math.inf
        self._mute_until = -math.inf

    def _mute(self, io: NodeIO) -> None:
        """Follow a playback node's events (on its clock and rate) on this node's clock."""
        for ev in io.events("mute"):
            if not ev.sample_rate:
                continue
            at = ev.sample * self.rate / ev.sample_rate
            if ev.type == "playback.started":
                if self._mute_until < at:  # the last span is over: a new one starts here
                    self._mute_from = at
                self._mute_until = math.inf  # until the clip ends
            elif ev.type == "playback.finished" or (ev.type == "playback.interrupted"
                                                    and ev.start_sample >= 0):
                # (a clip dropped before it started made no sound: nothing to be deaf to)
                end = at + self.params.mute_tail_ms * self.rate / 1000
                self._mute_until = end if self._mute_until == math.inf \
                    else max(self._mute_until, end)

    _CONTROLS = ("listen", "follow_playback")

    def check_control(self, values: dict[str, Any]) -> None:
        bad = [f"{k} = {v!r}" for k, v in values.items()
               if k not in self._CONTROLS or not isinstance(v, bool)]
        if bad or not values:
            raise ParamError(f"{self.id}: controls take listen = True/False and "
                             f"follow_playback = True/False, got {', '.join(bad) or 'nothing'}")

    def control(self, values: dict[str, Any]) -> None:
        """``listen`` / ``follow_playback`` (booleans), from the runtime between blocks."""
        self.check_control(values)
        self._listen = values.get("listen", self._listen)
        self._follow_playback = values.get("follow_playback", self._follow_playback)

    def _start_clock(self, start: int) -> None:
        self._base = start
        self._end = start
        self._out_pos = start
        self._speaking = False
        assert self._sm is not None and self._fw is not None
        self._sm.reset(origin=start)
        self._fw.reset()
        self._reset_detector()

    # -- processing
    def process(self, io: NodeIO) -> None:
        self._mute(io)
        x = io.audio("audio")
        n = len(x)
        start = io.start.get("audio", self._end if self._base is not None else 0)
        if self._base is None:
            self._start_clock(start)
        elif start != self._end:
            self._discontinuity(io, start)
        if n == 0:
            io.produced("speech", 0)
            return
        self._ring.write(x[:, 0], self._end)
        self._end += n
        for win in self._fw.push(x):  # type: ignore[union-attr]
            self._window(io, win[:, 0], self._base + self._fw.index)  # type: ignore
        self._gate(io, self._sm.frontier(self._end))  # type: ignore[union-attr]

    def flush(self, io: NodeIO) -> None:
        if self._base is None:
            io.produced("speech", 0)
            return
        fw, sm = self._fw, self._sm
        assert fw is not None and sm is not None
        if fw.pending > 0:  # the last, partial window, zero-padded (as Silero does offline)
            self._window(io, fw.tail()[:, 0], self._end - fw.pending)
        sm.finish(self._end)
        self._drain(io)
        self._gate(io, self._end)
        self.reset()

    def _window(self, io: NodeIO, win: np.ndarray, index: int) -> None:
        p = self._probability(win)  # run even when muted: the detector's state follows
        sm = self._sm
        playing = self._mute_from <= index < self._mute_until
        if not self._listen or (self._follow_playback and playing):
            p = 0.0
            self._counts["muted_windows"] += 1
        sm.min_speech = self._min_speech[playing and not self._follow_playback]  # type: ignore[union-attr]
        sm.step(p, index)  # type: ignore[union-attr]
        self._counts["windows"] += 1
        if self.params.emit_probability:
            io.emit("events", VadProbability(index, self.rate, self.id, probability=p))
        if sm.boundaries:  # type: ignore[union-attr]
            self._drain(io)

    def _drain(self, io: NodeIO) -> None:
        sm = self._sm
        for b in sm.boundaries:  # type: ignore[union-attr]
            if b.kind == "start":
                io.emit("events", SpeechStarted(b.sample, self.rate, self.id,
                                                probability=b.probability))
                self._counts["segments"] += 1
            else:
                io.emit("events", SpeechStopped(b.sample, self.rate, self.id,
                                                start_sample=b.other,
                                                speech_end_sample=b.speech_end))
            self._queue.append(b)
        self._counts["max_speech_splits"] = sm.splits  # type: ignore[union-attr]
        sm.boundaries.clear()  # type: ignore[union-attr]

    def _discontinuity(self, io: NodeIO, start: int) -> None:
        """The input clock jumped (a dropped or repeated block): close the open segment where
        the released speech audio ends, then restart the detector on the new clock."""
        self._counts["discontinuities"] += 1
        sm = self._sm
        # everything up to _out_pos has been released: stopping there keeps the speech port
        # equal to the segments, and this gate call copies nothing (process() gates again)
        sm.cut(self._out_pos)  # type: ignore[union-attr]
        self._drain(io)
        self._gate(io, self._out_pos)
        self._queue.clear()
        self._start_clock(start)

    # -- the speech port
    def _copy(self, out: np.ndarray, o: int, a: int, b: int) -> int:
        """Append ring samples ``[a, b)`` (absolute) to ``out`` at ``o``; return the new ``o``."""
        n = self._ring.read_into(out[o:, 0], a, b)
        self._counts["speech_samples"] += n
        return o + n

    def _gate(self, io: NodeIO, frontier: int) -> None:
        """Release the speech samples decided so far (everything before ``frontier``)."""
        out = io.out("speech")
        o = 0
        for b in self._queue:
            kind, sample = b.kind, b.sample
            if kind == "start":
                if not self._speaking:
                    self._out_pos = max(self._out_pos, sample)
                    self._speaking = True
            elif self._speaking:
                o = self._copy(out, o, self._out_pos, sample)
                self._out_pos = max(self._out_pos, sample)
                self._speaking = False
        self._queue.clear()
        if self._speaking:
            o = self._copy(out, o, self._out_pos, frontier)
        self._out_pos = max(self._out_pos, frontier)
        io.produced("speech", o)

    def stats(self) -> dict[str, Any]:
        return dict(self._counts)


@register
class SileroVad(_GatedVad):
    """``vad.silero``: Silero VAD v6 (ONNX, onnxruntime), 32 ms windows at 16 kHz (16 ms at 8 kHz)
    with Silero's 64 (32) samples of context and recurrent state carried between windows."""

    type_name = "vad.silero"
    rates = (16000, 8000)
    #: model files this node loads (checked by graph validation)
    models: ClassVar[tuple[tuple[str, str], ...]] = (("silero-vad", "silero_vad.onnx"),)

    @dataclass(frozen=True)
    class Params(VadParams):
        pass

    @classmethod
    def validate_params(cls, p: Params) -> list[str]:
        problems = super().validate_params(p)
        for name, file in cls.models:
            try:
                model_file(name, file)  # installed and matching its sha256
            except ModelError as e:
                problems.append(f"model: {e}")
        return problems

    def __init__(self, node_id: str, params: Any):
        super().__init__(node_id, params)
        self.model = None

    def _geometry(self, rate: int) -> tuple[int, int]:
        from ..models.silero import WINDOWS

        return WINDOWS[rate]

    def _load(self, rate: int) -> None:
        from ..models.silero import SileroModel

        if self.model is None or self.model.sample_rate != rate:
            self.model = SileroModel(rate)

    def _probability(self, win: np.ndarray) -> float:
        return self.model(win)  # type: ignore[misc]

    def _reset_detector(self) -> None:
        if self.model is not None:
            self.model.reset()

    def close(self) -> None:
        self.model = None


@register
class WebRtcVad(_GatedVad):
    """``vad.webrtc``: the WebRTC GMM voice detector (webrtcvad), one 0/1 decision per 10, 20 or
    30 ms frame, used as the probability of the same state machine. With ``smooth_frames > 1``
    the probability is the mean decision over that many recent frames."""

    type_name = "vad.webrtc"
    rates = (16000, 8000, 32000, 48000)

    @dataclass(frozen=True)
    class Params(VadParams):
        aggressiveness: int = param(3, ge=0, le=3, doc="0 (least) .. 3 (most aggressive)")
        frame_ms: int = param(30, choices=(10, 20, 30), doc="webrtcvad frame length")
        smooth_frames: int = param(1, ge=1, le=100,
                                   doc="average the 0/1 decisions over this many frames")

    def __init__(self, node_id: str, params: Any):
        super().__init__(node_id, params)
        self._vad = None
        self._f32 = np.zeros(0, np.float32)
        self._i16 = np.zeros(0, np.int16)
        self._bytes: memoryview | None = None
        self._hist = np.zeros(1, np.float32)
        self._k = 0

    def _geometry(self, rate: int) -> tuple[int, int]:
        return rate * self.params.frame_ms // 1000, 0

    def _load(self, rate: int) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(int(self.params.aggressiveness))
        self._f32 = np.zeros(self.window, np.float32)
        self._i16 = np.zeros(self.window, np.int16)
        self._bytes = memoryview(self._i16).cast("B")  # no copy per frame
        self._hist = np.zeros(self.params.smooth_frames, np.float32)

    def _probability(self, win: np.ndarray) -> float:
        f = self._f32
        np.multiply(win, 32768.0, out=f)
        np.clip(f, -32768.0, 32767.0, out=f)
        np.rint(f, out=f)
        self._i16[:] = f
        d = 1.0 if self._vad.is_speech(self._bytes, self.rate) else 0.0  # type: ignore[union-attr]
        if len(self._hist) == 1:
            return d
        self._hist[self._k % len(self._hist)] = d
        self._k += 1
        return float(self._hist.mean())

    def _reset_detector(self) -> None:
        if self._vad is not None:  # webrtcvad keeps adaptive noise estimates: start afresh
            import webrtcvad

            self._vad = webrtcvad.Vad(int(self.params.aggressiveness))
        self._hist[:] = 0.0
        self._k = 0
