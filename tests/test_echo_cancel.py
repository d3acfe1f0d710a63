"""``dsp.echo_cancel`` offline: real speech through a synthetic room (a known echo path), so
that what the canceller removes and what it keeps can be measured exactly. The real audio path
(a reply echoing into the null-sink microphone, a user barging in over it) is tested in
``tests/test_playback.py``; the figures are in ``tools/bench/bench_echo_cancel.py``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.signal import correlate

from engine.errors import GraphError, NegotiationError, ParamError
from engine.graph import parse_graph
from engine.node import AudioSpec
from engine.nodes.echo_cancel import LATENCY, EchoCancel
from engine.runtime import Engine
from engine.testing import run_node

from .conftest import REPO, load_mono, shared

FAR = ["speech/ljspeech__LJ001-0001.wav", "speech/ljspeech__LJ001-0008.wav"]  # 11.4 s
NEAR = "speech/librispeech-test-clean__1089-134691-0000.flac"


def _room(rate: int, rt60: float = 0.3, delay_s: float = 0.1, seed: int = 0) -> np.ndarray:
    """A room's impulse response: the echo delay, then exponentially decaying noise."""
    rng = np.random.default_rng(seed)
    n = int(rt60 * rate)
    t = np.arange(n) / rate
    h = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    h[0] = 3.0  # the direct sound
    return np.concatenate([np.zeros(int(delay_s * rate)), h])


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def _echo_scene(rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(far end = the reply at -26 dBFS, microphone = its echo at -22 dBFS RMS)."""
    far = np.concatenate([load_mono(shared(p), rate)[0] for p in FAR])
    far *= 10 ** (-26 / 20) / _rms(far)
    echo = np.convolve(far, _room(rate))[:len(far)]
    echo *= 10 ** (-22 / 20) / _rms(echo)
    return far.astype(np.float32), echo.astype(np.float32)


@pytest.mark.parametrize("rate", [16000, 48000])
def test_the_echo_goes_and_the_output_does_not_depend_on_the_block_size(rate):
    far, mic = _echo_scene(rate)
    outs = []
    for block in ([rate // 100, 1, 1024, [0, 1, 480, 17]] if rate == 16000
                  else [rate // 100, 1024, [0, 1, 480, 17]]):
        node = EchoCancel("aec", EchoCancel.Params())
        out = run_node(node, {"audio": mic, "reference": far}, rate, block).audio["audio"][:, 0]
        assert len(out) == len(mic) + LATENCY[rate]  # all of it, AEC3's delay included
        out = out[LATENCY[rate]:]
        outs.append(out)
        st = node.stats()
        assert st["reference_active_s"] > 8 and st["echo_reduction_db"] > 20, st
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])  # the same frames, in the same order
    after = slice(3 * rate, len(mic))  # the first reply in this room: it adapts first
    erle = 20 * np.log10(_rms(mic[after]) / _rms(outs[0][after]))
    assert erle > 30, f"echo reduced by only {erle:.1f} dB after 3 s"


def test_an_echo_later_than_aec3_searches_needs_reference_delay_ms():
    """AEC3 looks for the echo up to about 0.5 s after the reference: at 0.7 s it finds none,
    and ``reference_delay_ms`` (a known part of the delay taken off first) brings it back."""
    rate = 16000
    far, _ = _echo_scene(rate)
    mic = np.convolve(far, _room(rate, delay_s=0.7))[:len(far)].astype(np.float32)
    mic *= np.float32(10 ** (-22 / 20) / _rms(mic))
    after = slice(3 * rate, len(mic))
    erle = {}
    for ref_delay in (0.0, 400.0):
        node = EchoCancel("aec", EchoCancel.Params(reference_delay_ms=ref_delay))
        out = run_node(node, {"audio": mic, "reference": far}, rate, 160).audio["audio"][:, 0]
        erle[ref_delay] = 20 * np.log10(_rms(mic[after]) / _rms(out[after]))
    assert erle[0.0] < 10 and erle[400.0] > 25, erle


def test_a_voice_without_echo_passes_with_its_level_and_the_declared_delay():
    """No reference (nothing played): the microphone comes through, AEC3's high-pass filter
    and its own delay aside; the delay is what the node declares, at every rate."""
    rng = np.random.default_rng(1)
    for (rate, lag), ns in [(rl, ns) for rl in LATENCY.items() for ns in (False, True)]:
        x = (rng.standard_normal(3 * rate) * 0.05).astype(np.float32)
        node = EchoCancel("aec", EchoCancel.Params(noise_suppression=ns))
        assert node.negotiate({"audio": AudioSpec(rate, 1, 480),
                               "reference": AudioSpec(rate, 1, 480)})
        lag += rate * 6 // 1000 if ns else 0  # the noise suppressor's 6 ms
        assert node.latency_samples == lag
        out = run_node(node, {"audio": x, "reference": np.zeros_like(x)}, rate,
                       rate // 100).audio["audio"][:, 0]
        a, b = out[rate:], x[rate:]
        c = correlate(a, b, mode="full", method="fft")
        found = int(np.argmax(np.abs(c))) - (len(b) - 1)
        assert abs(found - lag) <= 4, (rate, found, lag)
    for rate in (16000, 48000):
        voice, _ = load_mono(shared(NEAR), rate)
        out = run_node(EchoCancel("aec", EchoCancel.Params()),
                       {"audio": voice, "reference": np.zeros_like(voice)}, rate, 480)
        y = out.audio["audio"][:, 0]
        assert abs(20 * np.log10(_rms(y) / _rms(voice))) < 1.0


def test_bypass_passes_the_microphone_through_on_the_same_timing():
    far, mic = _echo_scene(16000)
    lat = LATENCY[16000]
    node = EchoCancel("aec", EchoCancel.Params(bypass=True))
    out = run_node(node, {"audio": mic, "reference": far}, 16000, 480).audio["audio"][:, 0]
    np.testing.assert_array_equal(out[lat:], mic)
    assert not out[:lat].any() and node.stats()["bypass"] is True
    for bad in ({"bypass": "yes"}, {"enabled": True}, {}):
        with pytest.raises(ParamError, match="bypass = True/False"):
            node.check_control(bad)


def test_switching_bypass_at_run_time_leaves_no_gap_and_repeats_nothing():
    """A voice (a 440 Hz tone, no echo) while the canceller is switched off after 1 s and on
    again after 2 s: bypassed, the output is exactly the microphone delayed as the canceller
    delays it (the audio the canceller held comes out, nothing older); back on, a fresh
    canceller continues from where the bypass was (no 8 ms of silence)."""
    rate, block = 16000, 160
    lat = LATENCY[rate]
    t = np.arange(3 * rate) / rate
    mic = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    mic[rate // 2:rate // 2 + 400] = 0.9  # something loud earlier, never to be heard again
    ins = {"audio": mic, "reference": np.zeros_like(mic)}
    out = run_node(EchoCancel("aec", EchoCancel.Params()), ins, rate, block,
                   controls={rate // block: {"bypass": True},
                             2 * rate // block: {"bypass": False}}).audio["audio"][:, 0]
    assert len(out) == len(mic) + lat
    off, on = rate, 2 * rate
    np.testing.assert_array_equal(out[off:on], mic[off - lat:on - lat])
    after = out[on:on + rate // 10]
    # what a canceller that was never switched gives there (its filter's phase included)
    want = run_node(EchoCancel("aec", EchoCancel.Params()), ins, rate,
                    block).audio["audio"][on:on + rate // 10, 0]
    assert np.abs(after).max() < 0.2  # the 0.9 burst is not replayed
    env = np.sqrt(np.mean(after.reshape(-1, 40) ** 2, axis=1))  # 2.5 ms windows
    assert env.min() > 0.5 * 0.1 / np.sqrt(2), env.min()  # no gap
    assert _rms(after - want) < 0.3 * _rms(want)


GRAPH = """
[[nodes]]
id = "mic"
type = "source.microphone"
params = { sample_rate = %(rate)d, channels = %(ch)d }
[[nodes]]
id = "reply"
type = "source.playback"
params = { sample_rate = %(ref_rate)d }
[[nodes]]
id = "aec"
type = "dsp.echo_cancel"
in = { audio = "mic.audio", reference = "reply.audio" }
[[nodes]]
id = "out"
type = "sink.array"
in = { audio = "aec.audio" }
"""


@pytest.mark.parametrize("rate, ch, ref_rate, message", [
    (48000, 2, 48000, "nodes\\[aec\\]: aec.audio needs mono, got 48000 Hz stereo: add a dsp.mix"),
    (44100, 1, 44100, "aec.audio needs 48000 Hz or 16000 Hz or 32000 Hz or 8000 Hz, got "
                      "44100 Hz.*add a dsp.resample with rate = 48000"),
    (48000, 1, 16000, r"aec.reference needs the microphone's rate \(48000 Hz\), got 16000 Hz: "
                      "add a dsp.resample with rate = 48000"),
])
def test_formats_it_cannot_take_are_refused_with_the_fix(rate, ch, ref_rate, message):
    graph = parse_graph(GRAPH % {"rate": rate, "ch": ch, "ref_rate": ref_rate})
    with pytest.raises((GraphError, NegotiationError), match=message):
        Engine(graph, input="feed")


def test_without_the_livekit_package_validation_names_the_install_command():
    """The package blocked in a child process (as if not installed): ``audio-engine validate``
    reports it against the node, with the command that fixes it, instead of a traceback."""
    code = ("import sys; sys.modules['livekit'] = None; "
            "from engine.cli import main; sys.exit(main(['validate', sys.argv[1]]))")
    r = subprocess.run([sys.executable, "-c", code, str(REPO / "graphs" / "assistant.toml")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    msg = r.stdout + r.stderr
    assert "nodes[aec]" in msg and "pip install 'audio-engine[aec]'" in msg, msg
    assert "Traceback" not in msg
