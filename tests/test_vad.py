"""VAD nodes (``vad.silero``, ``vad.webrtc``) and their hysteresis state machine.

* the state machine on scripted probabilities: min speech, min silence, hysteresis, padding,
  ``max_speech_s`` splits, end of stream;
* the gated ``speech`` port on random scripted probabilities, random block sizes and a clock gap:
  it always equals the input slices between SpeechStarted and SpeechStopped;
* both real nodes: identical events, probabilities and speech audio for blocks of 1, 160, 480,
  1024; 48 kHz input through the streaming resampler gives the same events within one window;
* Silero probabilities equal an independent reimplementation of Silero's ``OnnxWrapper`` loop;
  segment boundaries agree with sherpa-onnx's VoiceActivityDetector (same model) within a window;
* format negotiation and refused model files (corrupt, wrong checksum) name the fix.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.dsp.vad_state import Boundary, VadStateMachine, silero_timestamps
from engine.errors import ModelError, NegotiationError
from engine.events import SpeechStarted, SpeechStopped, VadProbability
from engine.models import manifest
from engine.node import AudioSpec, NodeIO
from engine.nodes.vad import SileroVad, WebRtcVad, _GatedVad
from engine.testing import run_node

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data")
SR = 16000
W = 512  # Silero window at 16 kHz


def _silero_available() -> bool:
    try:
        manifest.model_file("silero-vad", "silero_vad.onnx")
        return True
    except ModelError:
        return False


needs_silero = pytest.mark.skipif(not _silero_available(),
                                  reason="silero-vad model not installed "
                                         "(audio-engine models fetch silero-vad)")
needs_data = pytest.mark.skipif(not (DATA / "speech").is_dir(), reason="no /work/shared/data")


def _read16(path: Path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != SR:
        from scipy.signal import resample_poly

        g = math.gcd(sr, SR)
        x = resample_poly(x, SR // g, sr // g).astype(np.float32)
    return x


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """~8.3 s at 16 kHz: silence, a LibriSpeech sentence, silence, four short commands, silence,
    with a -60 dBFS noise floor (so no window is digitally silent)."""
    if not (DATA / "speech").is_dir():
        pytest.skip("no /work/shared/data")
    a = _read16(DATA / "speech/librispeech-test-clean__1089-134691-0000.flac")
    b = _read16(DATA / "speech/speech-commands__yes_no_go_stop.wav")
    sig = np.concatenate([np.zeros(8000), a, np.zeros(16000), b, np.zeros(11000)])
    rng = np.random.default_rng(0)
    return (sig + 1e-3 * rng.standard_normal(len(sig))).astype(np.float32)


def segments(events) -> list[tuple[int, int]]:
    """(start, stop) pairs from SpeechStarted/SpeechStopped, checking they alternate."""
    out, start = [], None
    for e in events:
        if isinstance(e, SpeechStarted):
            assert start is None, "two starts in a row"
            start = e.sample
        elif isinstance(e, SpeechStopped):
            assert start is not None and e.start_sample == start
            assert e.sample > start
            out.append((start, e.sample))
            start = None
    assert start is None, "stream ended inside a segment"
    for (_, e0), (s1, _) in zip(out, out[1:], strict=False):
        assert s1 >= e0, "segments overlap"
    return out


def check_speech_port(x: np.ndarray, run) -> list[tuple[int, int]]:
    segs = segments(run.events["events"])
    want = (np.concatenate([x[a:b] for a, b in segs]) if segs else np.zeros(0, np.float32))
    got = run.audio["speech"][:, 0]
    assert len(got) == len(want)
    np.testing.assert_array_equal(got, want)
    return segs


# ---------------------------------------------------------------------------------------------
# the state machine on scripted probabilities


def drive(probs, **kw) -> tuple[VadStateMachine, list[Boundary]]:
    sm = VadStateMachine(SR, W, **kw)
    out = []
    for i, p in enumerate(probs):
        sm.step(float(p), i * W)
        out += sm.boundaries
        sm.boundaries.clear()
    sm.finish(len(probs) * W)
    out += sm.boundaries
    return sm, out


def bounds(out) -> list[tuple[str, int]]:
    return [(b.kind, b.sample) for b in out]


PAD = 480  # 30 ms at 16 kHz


def test_min_speech() -> None:
    # 250 ms = 4000 samples: 7 windows (3584) are too short, 8 (4096) are enough
    for n, expect in ((7, False), (8, True)):
        probs = [0.0] * 10 + [0.9] * n + [0.0] * 20
        _, out = drive(probs)
        assert bool(out) == expect, n
        if expect:
            assert bounds(out) == [("start", 10 * W - PAD), ("stop", (10 + n) * W + PAD)]


def test_min_speech_counts_until_silence_starts() -> None:
    # a candidate is confirmed by its extent up to the first window below neg_threshold
    probs = [0.0] * 5 + [0.9] * 3 + [0.4] * 5 + [0.1] * 10  # 8 windows >= neg: 4096 > 4000
    _, out = drive(probs)
    assert bounds(out) == [("start", 5 * W - PAD), ("stop", 13 * W + PAD)]
    _, out = drive([0.0] * 5 + [0.9] * 3 + [0.4] * 4 + [0.1] * 10)  # 6 windows: dropped
    assert out == []


def test_min_silence() -> None:
    # 100 ms = 1600 samples: silence ends speech on the window 1600+ samples after it started,
    # i.e. the 5th silent window (4 x 512 = 2048 >= 1600, 3 x 512 < 1600)
    one = [0.9] * 20 + [0.0] * 4 + [0.9] * 20 + [0.0] * 30
    _, out = drive([0.0] * 4 + one)
    assert [k for k, _ in bounds(out)] == ["start", "stop"]
    two = [0.9] * 20 + [0.0] * 5 + [0.9] * 20 + [0.0] * 30
    _, out = drive([0.0] * 4 + two)
    assert bounds(out) == [("start", 4 * W - PAD), ("stop", 24 * W + PAD),
                           ("start", 29 * W - PAD), ("stop", 49 * W + PAD)]


def test_hysteresis() -> None:
    # between neg_threshold (0.35) and threshold (0.5): neither starts speech nor silence
    _, out = drive([0.0] * 4 + [0.45] * 40)
    assert out == []
    _, out = drive([0.0] * 4 + [0.9] * 10 + [0.45] * 30 + [0.0] * 10)
    assert bounds(out) == [("start", 4 * W - PAD), ("stop", 44 * W + PAD)]
    # once silence started, hovering windows neither cancel it nor (as in Silero) close it ...
    _, out = drive([0.0] * 4 + [0.9] * 10 + [0.1] + [0.45] * 10 + [0.9] * 10 + [0.0] * 10)
    assert bounds(out) == [("start", 4 * W - PAD), ("stop", 35 * W + PAD)]
    # ... until it has lasted min_silence + 1 s (the streaming bound): 35 windows >= 17600
    sm, out = drive([0.0] * 4 + [0.9] * 10 + [0.1] + [0.45] * 60)
    assert bounds(out) == [("start", 4 * W - PAD), ("stop", 14 * W + PAD)]
    assert sm.max_undecided == PAD + 4000 + 1600 + 16000 + 4 * W


def test_pad_clamped_to_stream_start_and_previous_segment() -> None:
    _, out = drive([0.9] * 20 + [0.0] * 20)
    assert bounds(out)[0] == ("start", 0)
    # long pads: the next start never reaches back before the previous stop
    probs = [0.0] * 10 + [0.9] * 20 + [0.0] * 9 + [0.9] * 20 + [0.0] * 30
    _, out = drive(probs, speech_pad_ms=200, min_silence_ms=200)
    b = bounds(out)
    assert [k for k, _ in b] == ["start", "stop", "start", "stop"]
    assert b[0][1] == 10 * W - 3200
    assert b[1][1] == 30 * W + 3200  # 200 ms pad <= min silence + 1 window: kept whole
    assert b[2][1] == b[1][1]  # 200 ms before the second onset (39 * W) overlaps: clamped
    # the pad after speech never exceeds min silence + one window (decided, never in the future)
    _, out = drive([0.0] * 4 + [0.9] * 20 + [0.0] * 40, speech_pad_ms=500)
    assert bounds(out)[1] == ("stop", 24 * W + 1600 + W)


def test_max_speech_split_at_longest_pause() -> None:
    # 5 s limit; speech with a 5-window (160 ms) pause and a 4-window pause, never ending
    probs = [0.0] * 3 + [0.9] * 60 + [0.0] * 4 + [0.9] * 40 + [0.0] * 4 + [0.9] * 200
    probs[3 + 60 + 4 + 40 + 1] = 0.9  # second pause: 0.0, 0.9, 0.0, 0.0 -> shorter silence
    sm, out = drive(probs + [0.0] * 10, max_speech_s=5.0)
    b = bounds(out)
    kinds = [k for k, _ in b]
    assert kinds[:3] == ["start", "stop", "start"] and sm.splits >= 1
    # the cut is contiguous and in the middle of the first (longest) pause: windows 63..66
    assert b[1][1] == b[2][1] == 63 * W + (4 * W) // 2
    segments_ = [(b[i][1], b[i + 1][1]) for i in range(0, len(b), 2)]
    assert all(e - s <= 5 * SR for s, e in segments_)


def test_max_speech_split_at_lowest_probability_without_pause() -> None:
    # 3 s limit: the segment (from window 2) is split at window 93, when it exceeds
    # 3 s - one window - 2 pads; the cut is the quietest window of its second half (47..92)
    probs = [0.0] * 2 + [0.95] * 150 + [0.0] * 10
    probs[30] = 0.52  # quieter, but in the first half
    probs[70] = 0.55
    _, out = drive(probs, max_speech_s=3.0)
    b = bounds(out)
    assert [k for k, _ in b] == ["start", "stop", "start", "stop"]
    assert b[1][1] == b[2][1] == 70 * W + W // 2


def test_end_of_stream() -> None:
    _, out = drive([0.0] * 4 + [0.9] * 20)  # still speaking: closed at the end
    assert bounds(out) == [("start", 4 * W - PAD), ("stop", 24 * W)]
    _, out = drive([0.0] * 4 + [0.9] * 5)  # too short even at the end: dropped
    assert out == []
    _, out = drive([0.0] * 4 + [0.9] * 20 + [0.0] * 2)  # silence started: end at it + pad
    assert bounds(out) == [("start", 4 * W - PAD), ("stop", 24 * W + PAD)]


def test_machine_equals_silero_offline_rules_on_random_scripts() -> None:
    """Streaming decisions == Silero's offline get_speech_timestamps on the same probabilities
    (no hovering run reaches the 1 s streaming bound; the script ends in silence)."""
    rng = np.random.default_rng(3)
    for trial in range(40):
        vals, last = [], None
        while len(vals) < 600:
            v = rng.choice([x for x in (0.05, 0.2, 0.4, 0.6, 0.95) if x != last])
            vals += [float(v)] * int(rng.integers(1, 11 if 0.35 <= v < 0.5 else 30))
            last = v
        vals += [0.05] * 20  # long enough to close any segment before the end
        kw = {"min_speech_ms": float(rng.choice([0, 100, 250])),
              "min_silence_ms": float(rng.choice([50, 100, 300])),
              "speech_pad_ms": float(rng.choice([0, 30]))}
        _, out = drive(vals, **kw)
        b = bounds(out)
        ours = [(b[i][1], b[i + 1][1]) for i in range(0, len(b), 2)]
        assert ours == silero_timestamps(vals, SR, len(vals) * W, **kw), (trial, kw)


# ---------------------------------------------------------------------------------------------
# the gated speech port, with a scripted detector


class Scripted(_GatedVad):
    """A VAD whose probability for the k-th window is ``script[k]``."""

    type_name = ""
    rates = (16000,)

    def __init__(self, script, **kw):
        super().__init__("s", _GatedVad.Params(emit_probability=True, **kw))
        self.script = script
        self.k = 0

    def _geometry(self, rate: int) -> tuple[int, int]:
        return W, 64

    def _probability(self, win: np.ndarray) -> float:
        assert len(win) == W + 64
        p = float(self.script[self.k % len(self.script)])
        self.k += 1
        return p

    def _reset_detector(self) -> None:
        self.k = 0


def test_speech_port_random_scripts_and_blocks() -> None:
    rng = np.random.default_rng(1)
    for trial in range(6):
        n_win = 400
        # runs of speech/silence/hovering of random lengths
        script = np.concatenate([np.full(rng.integers(1, 25), rng.choice([0.05, 0.4, 0.95]))
                                 for _ in range(80)])[:n_win]
        x = rng.standard_normal(n_win * W + int(rng.integers(0, W))).astype(np.float32)
        kw = {"max_speech_s": 2.5} if trial % 2 else {"speech_pad_ms": 150, "min_speech_ms": 60}
        ref = None
        for block in (int(rng.integers(1, 600)), 997, 4096):
            run = run_node(Scripted(script, **kw), x, SR, block)
            check_speech_port(x, run)
            if ref is None:
                ref = run
            else:
                assert run.events == ref.events


def test_speech_port_clock_gap() -> None:
    """A jump in io.start closes the open segment where its released audio ends."""
    node = Scripted([0.95] * 30 + [0.05] * 100)
    spec = AudioSpec(SR, 1, 512)
    out_spec = node.negotiate({"audio": spec})["speech"]
    node.prepare({"audio": spec, "speech": out_spec})
    out = np.zeros((out_spec.max_block, 1), np.float32)
    io = NodeIO("s", {"speech": out}, ["events"])
    x = np.random.default_rng(2).standard_normal((SR, 1)).astype(np.float32)
    got, evs = [], []
    for start in (0, 512, 1024, 1536, 2048, 2560, 3072, 3584, 4096, 4608, 5120, 9000):
        io._in = {"audio": x[start % 8000:start % 8000 + 512]}
        io.start = {"audio": start}
        node.process(io)
        got.append(out[:io._produced["speech"], 0].copy())
        evs += io._events_out["events"]
        io._events_out["events"].clear()
    evs = [e for e in evs if not isinstance(e, VadProbability)]
    assert node.stats()["discontinuities"] == 1
    assert [type(e) for e in evs] == [SpeechStarted, SpeechStopped]
    assert evs[0].sample == 0 and evs[1].sample == sum(len(g) for g in got)


# ---------------------------------------------------------------------------------------------
# the real nodes

NODES = [pytest.param(SileroVad, marks=needs_silero, id="silero"),
         pytest.param(WebRtcVad, id="webrtc")]


@needs_data
@pytest.mark.parametrize("cls", NODES)
def test_block_size_invariance(cls, speech) -> None:
    params = cls.Params(emit_probability=True)
    ref = run_node(cls("v", params), speech, SR, 480)
    segs = check_speech_port(speech, ref)
    assert len(segs) >= 2
    for block in (160, 1024):
        run = run_node(cls("v", params), speech, SR, block)
        assert run.events == ref.events
        np.testing.assert_array_equal(run.audio["speech"], ref.audio["speech"])
    # one frame at a time, on the first 1.5 s (one onset)
    short = speech[:24000]
    a = run_node(cls("v", params), short, SR, 1)
    b = run_node(cls("v", params), short, SR, 480)
    assert a.events == b.events and any(isinstance(e, SpeechStarted) for e in a.events["events"])
    np.testing.assert_array_equal(a.audio["speech"], b.audio["speech"])


@needs_data
@needs_silero
def test_48k_through_resampler(speech) -> None:
    try:
        from engine.dsp.resample import StreamingResampler
    except ImportError:
        pytest.skip("engine.dsp.resample not available")
    from scipy.signal import resample_poly

    x48 = resample_poly(speech, 3, 1).astype(np.float32)[:, None]
    rs = StreamingResampler(48000, 16000, 1)
    out = np.zeros((rs.max_output(480) + 3, 1), np.float32)
    parts = []
    for i in range(0, len(x48), 480):
        parts.append(out[:rs.process(x48[i:i + 480], out)].copy())
    tail = np.zeros((rs.max_flush, 1), np.float32)
    parts.append(tail[:rs.flush(tail)])
    y = np.concatenate(parts)[rs.latency_out:, 0]  # align with the 16 kHz clock
    a = segments(run_node(SileroVad("v", SileroVad.Params()), speech, SR, 480).events["events"])
    b = segments(run_node(SileroVad("v", SileroVad.Params()), y, SR, 480).events["events"])
    assert len(a) == len(b) >= 2
    assert np.abs(np.array(a) - np.array(b)).max() <= W


@needs_data
@needs_silero
def test_silero_probabilities_match_reference_loop(speech) -> None:
    """Silero's OnnxWrapper contract, reimplemented independently: 512-sample chunks, the last
    64 samples of the previous model input prepended (zeros first), state carried over."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(manifest.model_file("silero-vad", "silero_vad.onnx")),
                                providers=["CPUExecutionProvider"])
    x = speech[:3 * SR]
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros((1, 64), np.float32)
    ref = []
    for i in range(0, len(x), W):
        chunk = np.zeros((1, W), np.float32)
        chunk[0, :len(x[i:i + W])] = x[i:i + W]
        inp = np.concatenate([context, chunk], axis=1)
        p, state = sess.run(None, {"input": inp, "state": state, "sr": np.array(SR, np.int64)})
        ref.append(float(p[0, 0]))
        context = inp[:, -64:]
    run = run_node(SileroVad("v", SileroVad.Params(emit_probability=True)), x, SR, 333)
    probs = [e for e in run.events["events"] if isinstance(e, VadProbability)]
    assert [e.sample for e in probs] == list(range(0, len(x), W))
    np.testing.assert_allclose([e.probability for e in probs], ref, atol=1e-5)
    assert max(ref) > 0.9 and min(ref) < 0.1


@needs_data
@needs_silero
def test_silero_node_equals_silero_offline_rules(speech) -> None:
    noise = _read16(DATA / "vad/speech-commands-bg__doing_the_dishes.wav")[:len(speech)]
    noisy = speech + noise * (np.std(speech) / np.std(noise) / 10 ** (5 / 20))  # ~5 dB SNR
    for x in (speech, noisy.astype(np.float32)):
        run = run_node(SileroVad("v", SileroVad.Params(emit_probability=True)), x, SR, 480)
        probs = [e.probability for e in run.events["events"] if isinstance(e, VadProbability)]
        assert check_speech_port(x, run) == silero_timestamps(probs, SR, len(x))


@needs_data
@needs_silero
def test_segments_agree_with_sherpa_onnx(speech) -> None:
    sherpa_onnx = pytest.importorskip("sherpa_onnx")
    cfg = sherpa_onnx.VadModelConfig()
    cfg.silero_vad.model = str(manifest.model_file("silero-vad", "silero_vad.onnx"))
    cfg.silero_vad.threshold = 0.5
    cfg.silero_vad.min_silence_duration = 0.1
    cfg.silero_vad.min_speech_duration = 0.25
    cfg.silero_vad.max_speech_duration = 1000.0
    cfg.silero_vad.window_size = W
    cfg.sample_rate = SR
    cfg.num_threads = 1
    vad = sherpa_onnx.VoiceActivityDetector(cfg, buffer_size_in_seconds=30)
    theirs = []
    for i in range(0, len(speech), W):
        vad.accept_waveform(speech[i:i + W])
    vad.flush()
    while not vad.empty():
        theirs.append((vad.front.start, vad.front.start + len(vad.front.samples)))
        vad.pop()
    ours = segments(run_node(SileroVad("v", SileroVad.Params()), speech, SR, 512)
                    .events["events"])
    # sherpa-onnx confirms speech only after min_speech of consecutive windows above the
    # threshold, so it may drop a short word that Silero's rules (ours) keep; every segment it
    # reports must be ours within one window at both ends
    assert theirs
    for s, e in theirs:
        d = min(max(abs(s - a), abs(e - b)) for a, b in ours)
        assert d <= W, (s, e, ours)


@needs_data
@needs_silero
def test_silero_quiet_on_noise_and_silence() -> None:
    noise = _read16(DATA / "vad/speech-commands-bg__exercise_bike.wav")[:10 * SR]
    silence = np.zeros(2 * SR, np.float32)
    for x in (noise, silence):
        run = run_node(SileroVad("v", SileroVad.Params()), x, SR, 1024)
        assert run.events["events"] == [] and len(run.audio["speech"]) == 0


@needs_data
@needs_silero
def test_silero_8k(speech) -> None:
    from scipy.signal import resample_poly

    x8 = resample_poly(speech, 1, 2).astype(np.float32)
    a = segments(run_node(SileroVad("v", SileroVad.Params()), speech, SR, 480).events["events"])
    run = run_node(SileroVad("v", SileroVad.Params()), x8, 8000, 240)
    assert run.specs["speech"].sample_rate == 8000
    b = segments(run.events["events"])
    assert len(a) == len(b)
    assert np.abs(np.array(a) - 2 * np.array(b)).max() <= W  # within one 16 kHz window


# ---------------------------------------------------------------------------------------------
# negotiation and model files


@pytest.mark.parametrize("cls", [SileroVad, WebRtcVad])
def test_negotiation_names_the_fix(cls) -> None:
    node = cls("vad", cls.Params())
    with pytest.raises(NegotiationError, match=r"vad\.audio needs 16000 Hz.*dsp\.resample"):
        node.negotiate({"audio": AudioSpec(44100, 1, 441)})
    with pytest.raises(NegotiationError, match="dsp.mix"):
        node.negotiate({"audio": AudioSpec(16000, 2, 160)})
    spec = node.negotiate({"audio": AudioSpec(16000, 1, 160)})["speech"]
    assert spec.sample_rate == 16000 and spec.channels == 1
    assert spec.max_block >= 160 + 480 + 4000  # the pre-roll burst fits
    with pytest.raises(NegotiationError, match="neg_threshold"):
        cls("vad", cls.Params(threshold=0.3, neg_threshold=0.4)).negotiate(
            {"audio": AudioSpec(16000, 1, 160)})


def test_webrtc_rates() -> None:
    x = np.zeros(4800, np.float32)
    for rate in (8000, 16000, 32000, 48000):
        for ms in (10, 20, 30):
            node = WebRtcVad("w", WebRtcVad.Params(frame_ms=ms))
            run = run_node(node, x[: rate // 10], rate, 100)
            assert node.window == rate * ms // 1000 and run.events["events"] == []


@pytest.fixture
def models_copy(tmp_path, monkeypatch) -> Path:
    """A private models folder (AUDIO_ENGINE_MODELS) with the real manifest and a copy of the
    model, to be damaged by the test."""
    src = manifest.model_file("silero-vad", "silero_vad.onnx")  # checks the real one first
    (tmp_path / "silero-vad").mkdir()
    shutil.copy(ROOT / "models_onnx/manifest.toml", tmp_path / "manifest.toml")
    shutil.copy(src, tmp_path / "silero-vad/silero_vad.onnx")
    monkeypatch.setenv("AUDIO_ENGINE_MODELS", str(tmp_path))
    return tmp_path


@needs_silero
def test_corrupt_model_refused(models_copy) -> None:
    f = models_copy / "silero-vad/silero_vad.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\x00" * 64
    f.write_bytes(bytes(data))
    node = SileroVad("vad", SileroVad.Params())
    with pytest.raises(ModelError, match=r"corrupt.*audio-engine models fetch silero-vad"):
        run_node(node, np.zeros(1600, np.float32), SR, 160)


@needs_silero
def test_wrong_sha256_refused(models_copy) -> None:
    m = models_copy / "manifest.toml"
    text = m.read_text()
    real = tomllib.loads(text)["models"]["silero-vad"]["files"][0]["sha256"]
    m.write_text(text.replace(real, "0" * 64))
    with pytest.raises(ModelError, match=r"sha256 does not match.*models fetch silero-vad"):
        SileroVad("vad", SileroVad.Params()).prepare(
            {"audio": AudioSpec(SR, 1, 160), "speech": AudioSpec(SR, 1, 5000)})


@needs_silero
def test_unloadable_model_refused(models_copy) -> None:
    """A file that matches its (edited) checksum but is not ONNX: onnxruntime's failure becomes
    a ModelError with the fix."""
    import hashlib

    f = models_copy / "silero-vad/silero_vad.onnx"
    f.write_bytes(b"not an onnx model")
    m = models_copy / "manifest.toml"
    text = m.read_text()
    real = tomllib.loads(text)["models"]["silero-vad"]["files"][0]["sha256"]
    m.write_text(text.replace(real, hashlib.sha256(b"not an onnx model").hexdigest()))
    with pytest.raises(ModelError, match=r"could not be loaded.*models fetch silero-vad"):
        SileroVad("vad", SileroVad.Params()).prepare(
            {"audio": AudioSpec(SR, 1, 160), "speech": AudioSpec(SR, 1, 5000)})


def test_monitor_graph_file() -> None:
    g = tomllib.loads((ROOT / "graphs/vad_monitor.toml").read_text())
    types = {n["id"]: n["type"] for n in g["nodes"]}
    assert "vad.silero" in types.values() and "dsp.resample" in types.values()
    mic = next(n for n in g["nodes"] if n["type"] == "source.microphone")
    assert mic["params"] == {"sample_rate": 48000, "block": 480}
    try:
        from engine.graph import load_graph
    except ImportError:
        pytest.skip("engine.graph not available")
    spec = load_graph(ROOT / "graphs/vad_monitor.toml")
    vad = spec.node("vad")
    assert vad.cls is SileroVad and vad.params == SileroVad.Params()


def test_graph_validation_reports_threshold_order() -> None:
    assert SileroVad.validate_params(SileroVad.Params()) == []
    problems = WebRtcVad.validate_params(WebRtcVad.Params(threshold=0.3, neg_threshold=0.4))
    assert len(problems) == 1 and problems[0].startswith("neg_threshold:")


@needs_silero
def test_validate_reports_a_missing_or_corrupt_silero_model(models_copy) -> None:
    """`audio-engine validate` (graph stage 3) checks the model a vad.silero node will load,
    as it does for Whisper and YAMNet, instead of passing and failing at run time."""
    import subprocess
    import sys

    f = models_copy / "silero-vad/silero_vad.onnx"
    f.write_bytes(f.read_bytes()[:-100])
    graph = str(ROOT / "graphs" / "vad_monitor.toml")
    r = subprocess.run([sys.executable, "-m", "engine.cli", "validate", graph],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "nodes[vad]" in r.stderr and "corrupt" in r.stderr
    assert "audio-engine models fetch silero-vad" in r.stderr
    f.unlink()
    r = subprocess.run([sys.executable, "-m", "engine.cli", "validate", graph],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not installed" in r.stderr, r.stderr
