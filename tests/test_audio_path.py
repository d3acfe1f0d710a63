"""The real PortAudio path: PulseAudio's null sink is the microphone and the speaker.

A real recording is played into the sink with ``pacat``; the engine captures the sink's monitor
through ``source.microphone`` (both backends) and records it with ``sink.wav``. Then the engine
plays a file through ``sink.speaker`` while ``parec`` records the monitor.
"""

from __future__ import annotations

import io
import os
import subprocess
import threading
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile as sf
from onnx import TensorProto, helper

from engine.graph import parse_graph
from engine.node import NodeIO, register
from engine.nodes.gain import Gain
from engine.runtime import Engine

from .conftest import REPO, Player, Recorder, best_alignment, load_mono, shared

MIC_GRAPH = """
schema_version = 1
name = "capture"
[engine]
backend = "{backend}"
[[nodes]]
id = "mic"
type = "source.microphone"
params = {{ sample_rate = 48000, channels = 1, block = 480 }}
[[nodes]]
id = "rec"
type = "sink.wav"
in = {{ audio = "mic.audio" }}
params = {{ path = "{path}" }}
"""

SPEAKER_GRAPH = """
schema_version = 1
[[nodes]]
id = "src"
type = "source.file"
params = {{ path = "{path}" }}
[[nodes]]
id = "out"
type = "sink.speaker"
in = {{ audio = "src.audio" }}
{params}
"""


def _capture(tmp_path, backend: str, audio: np.ndarray, rate: int, busy=None):
    out = tmp_path / f"capture-{backend}.wav"
    spec = parse_graph(MIC_GRAPH.format(backend=backend, path=out))
    eng = Engine(spec)
    eng.start()
    try:
        time.sleep(0.4)
        if busy is not None:
            busy.start()
        Player(audio, rate).start().join()
        time.sleep(1.0)  # PulseAudio's own buffering: let the tail reach the monitor
    finally:
        eng.stop()
        if busy is not None:
            busy.stop()
    got, sr = sf.read(str(out), dtype="float32")
    return eng, got, sr


@pytest.mark.parametrize("backend", ["sounddevice", "pyaudio"])
def test_microphone_captures_what_is_played(pulse, tmp_path, backend):
    x, sr = load_mono(shared("speech/librispeech-test-clean__1089-134686-0000.flac"))
    x = x[: 4 * sr]  # 4 s of real speech keeps the test short
    eng, got, got_sr = _capture(tmp_path, backend, x, sr)
    assert got_sr == 48000
    ref, _ = load_mono(shared("speech/librispeech-test-clean__1089-134686-0000.flac"), 48000)
    ref = ref[int(0.5 * 48000): int(3.5 * 48000)]  # the middle 3 s must be found whole
    lag, ncc = best_alignment(ref, got)
    st = eng.stats()["nodes"]["mic"]
    assert ncc >= 0.95, f"capture does not match playback: ncc={ncc:.3f} at lag {lag}"
    assert st["input_overflows"] == 0
    assert st["ring_overflow_frames"] == 0
    assert st["callbacks"] > 100
    assert st["late_deliveries"] == 0, st  # the device's start-up is not a late delivery


def test_speaker_plays_through_the_sink(pulse, tmp_path):
    path = shared("speech/ljspeech__LJ001-0001.wav")
    x, sr = load_mono(path)
    spec = parse_graph(SPEAKER_GRAPH.format(path=path, params=""))
    rec = Recorder(48000, 1)
    time.sleep(0.3)
    try:
        eng = Engine(spec, realtime=True)
        eng.run()
        time.sleep(0.4)
    finally:
        got = rec.stop()[:, 0]
    ref, _ = load_mono(path, 48000)
    ref = ref[48000: len(ref) - 48000]  # the middle must be found whole in the recording
    lag, ncc = best_alignment(ref, got)
    assert ncc >= 0.95, f"played audio differs from the file: ncc={ncc:.3f}"
    st = eng.stats()["nodes"]["out"]
    assert st["dropped_frames"] == 0


class _BusyInference:
    """Runs an onnxruntime model continuously on a worker thread (as an ASR worker would)."""

    def __init__(self):
        n = 512
        w = helper.make_tensor("w", TensorProto.FLOAT, [n, n],
                               np.random.default_rng(0).standard_normal(n * n).astype(np.float32)
                               .ravel().tolist())
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y0"])]
        for i in range(1, 8):
            nodes.append(helper.make_node("MatMul", [f"y{i - 1}", "w"], [f"y{i}"]))
        g = helper.make_graph(nodes, "busy", [helper.make_tensor_value_info(
            "x", TensorProto.FLOAT, [64, n])], [helper.make_tensor_value_info(
                "y7", TensorProto.FLOAT, [64, n])], [w])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(onnx._serialize(model) if hasattr(onnx, "_serialize")
                                         else model.SerializeToString(), so)
        self.x = np.ones((64, n), np.float32) * 1e-3
        self._stop = threading.Event()
        self.runs = 0
        self.t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            self.sess.run(None, {"x": self.x})
            self.runs += 1

    def start(self):
        self.t.start()

    def stop(self):
        self._stop.set()
        self.t.join(5)


@register
class _TooSlow(Gain):
    """Test-only node type: a 0 dB dsp.gain that takes 20 ms for every call (each 10 ms of
    audio), so a live graph falls behind real time by half a second per second."""

    type_name = "test.too_slow"

    def process(self, io: NodeIO) -> None:
        time.sleep(0.02)
        super().process(io)


def test_a_graph_too_slow_for_real_time_says_it_drops_input(pulse, tmp_path, monkeypatch):
    """A node too slow for real time makes the microphone's ring overflow: that audio is lost,
    and the user is told (an ``engine.xrun`` of kind ``input_dropped``, the CLI's notice, the
    summary), where it was silent before: the run said nothing, exit 0, 0.3x real time."""
    from engine.cli import _device_notice, _summary
    from engine.console import CONSOLE
    from engine.nodes.microphone import Microphone

    monkeypatch.setattr(Microphone, "ring_seconds", 0.3)  # full after 0.6 s behind, not 20 s
    spec = parse_graph(MIC_GRAPH.format(backend="sounddevice", path=tmp_path / "x.wav")
                       .replace('in = { audio = "mic.audio" }', 'in = { audio = "slow.audio" }')
                       + '[[nodes]]\nid = "slow"\ntype = "test.too_slow"\n'
                         'in = { audio = "mic.audio" }\n')
    eng = Engine(spec)
    xruns: list = []
    eng.on("engine.xrun", xruns.append)
    with eng:
        time.sleep(3.0)
    dropped = [e for e in xruns if e.kind == "input_dropped"]
    assert dropped and dropped[0].node == "mic", xruns
    stats = eng.stats()
    assert stats["nodes"]["mic"]["ring_overflow_frames"] > 0.1 * 48000, stats["nodes"]["mic"]
    assert "s of input dropped (the graph fell behind real time)" in _summary(stats)
    shown = io.StringIO()
    monkeypatch.setattr(CONSOLE, "stream", shown)
    _device_notice(dropped[0])
    assert "mic: the graph fell behind real time at" in shown.getvalue()


def test_callback_budget_under_inference_load(pulse, tmp_path):
    """While onnxruntime runs continuously on another thread, the capture callback's p99
    duration stays under 10% of the block period (480 frames at 48 kHz = 10 ms)."""
    x, sr = load_mono(shared("speech/librispeech-test-clean__1089-134686-0001.flac"))
    busy = _BusyInference()
    eng, got, _ = _capture(tmp_path, "sounddevice", x[: 3 * sr], sr, busy=busy)
    st = eng.stats()["nodes"]["mic"]
    assert busy.runs > 10, "the inference load did not run"
    period_ms = 480 / 48000 * 1e3
    assert st["callbacks"] > 200
    assert st["callback_p99_ms"] < 0.1 * period_ms, st
    assert st["input_overflows"] == 0


def _wait_for(pred, timeout: float) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.restarts_audio_server
@pytest.mark.skipif(os.environ.get("AUDIO_ENGINE_NO_PULSE_RESTART") == "1",
                    reason="AUDIO_ENGINE_NO_PULSE_RESTART=1: this test kills the PulseAudio server")
@pytest.mark.parametrize("backend", ["sounddevice", "pyaudio"])
def test_microphone_survives_losing_the_audio_server(pulse, tmp_path, backend):
    """The microphone disappears mid-stream (the PulseAudio server is killed, as when a USB
    microphone is unplugged): the engine keeps running and its clock keeps going with silence,
    reports a ``stall``, reopens the device when it is back, reports ``recovered``, and then
    captures what is played as before."""
    out = tmp_path / "capture.wav"
    spec = parse_graph(MIC_GRAPH.format(backend=backend, path=out).replace(
        "block = 480 }", "block = 480, stall_timeout_s = 1.0 }"))
    eng = Engine(spec)
    status: list = []
    eng.on("engine.xrun", status.append)
    eng.start()
    t0 = time.monotonic()
    try:
        assert _wait_for(lambda: eng.stats()["nodes"]["mic"]["callbacks"] > 20, 5.0)
        subprocess.run(["pkill", "-9", "-x", "pulseaudio"], check=False)
        assert _wait_for(lambda: any(e.kind == "stall" for e in status), 10.0), status
        assert eng.error is None and not eng.wait(0)  # still running
        time.sleep(1.0)
    finally:
        subprocess.run(["bash", "-c", f". {REPO}/tools/pulse_null.sh"], capture_output=True)
    try:
        assert _wait_for(lambda: any(e.kind == "recovered" for e in status), 20.0), status
        time.sleep(0.5)
        x, sr = load_mono(shared("speech/librispeech-test-clean__1089-134686-0000.flac"))
        Player(x[: 4 * sr], sr).start().join()
        time.sleep(1.0)
    finally:
        eng.stop()
    wall = time.monotonic() - t0
    got, got_sr = sf.read(str(out), dtype="float32")
    # the clock ran through the outage at the pace of the wall clock: the recording is as long
    # as the session, less the start-up and the device's buffering, and never longer
    assert wall - 2.0 < len(got) / got_sr < wall + 0.5, (len(got) / got_sr, wall)
    ref, _ = load_mono(shared("speech/librispeech-test-clean__1089-134686-0000.flac"), 48000)
    lag, ncc = best_alignment(ref[int(0.5 * 48000): int(3.5 * 48000)], got)
    assert ncc >= 0.95, f"capture after recovery does not match playback: ncc={ncc:.3f}"
    rec = next(e for e in status if e.kind == "recovered")
    stall = next(e for e in status if e.kind == "stall")
    assert rec.sample > stall.sample and rec.count > 0
    assert lag > rec.sample  # the speech was captured after the recovery (same 48 kHz clock)
    mic = eng.stats()["nodes"]["mic"]
    assert mic["reopens"] >= 1
    # the callback counts of the stream before the outage are kept: they account for the
    # captured audio (less the silence that stood in), not only the reopened stream's part
    captured = len(got) - mic["zero_filled_frames"]
    assert mic["callbacks"] * 480 >= 0.9 * captured, (mic["callbacks"], captured)


@pytest.mark.restarts_audio_server
@pytest.mark.skipif(os.environ.get("AUDIO_ENGINE_NO_PULSE_RESTART") == "1",
                    reason="AUDIO_ENGINE_NO_PULSE_RESTART=1: this test kills the PulseAudio server")
def test_speaker_survives_losing_the_audio_server(pulse, tmp_path):
    """The output device disappears mid-playback (PulseAudio killed): the graph goes on, the
    speaker reports ``stall``, reopens the device when it is back, reports ``recovered``, and
    what it plays after that is the file, at the position the graph's clock has reached."""
    path = shared("speech/librispeech-test-clean__1221-135766-0001.wav")  # 16.7 s
    spec = parse_graph(SPEAKER_GRAPH.format(path=path,
                                            params="params = { stall_timeout_s = 1.0 }"))
    eng = Engine(spec, realtime=True)
    status: list = []
    eng.on("engine.xrun", status.append)
    eng.start()
    try:
        time.sleep(1.5)
        subprocess.run(["pkill", "-9", "-x", "pulseaudio"], check=False)
        assert _wait_for(lambda: any(e.kind == "stall" for e in status), 10.0), status
        assert eng.error is None and not eng.wait(0)
    finally:
        subprocess.run(["bash", "-c", f". {REPO}/tools/pulse_null.sh"], capture_output=True)
    try:
        assert _wait_for(lambda: any(e.kind == "recovered" for e in status), 20.0), status
        time.sleep(0.5)
        rec = Recorder(48000, 1)  # a fresh server's monitor can take a moment to deliver
        time.sleep(3.5)
        got = rec.stop()[:, 0]
        at = eng.audio_seconds
    finally:
        eng.stop()
    assert eng.error is None
    ref, sr = load_mono(path, 48000)
    assert at < len(ref) / sr - 0.5, "the file ended before the check: use a longer one"
    chunk = got[len(got) - int(1.25 * sr): len(got) - int(0.25 * sr)]  # the last second but one
    assert len(chunk) == sr and np.sqrt(np.mean(chunk ** 2)) > 1e-3, \
        f"nothing played after the recovery ({len(got) / sr:.2f} s recorded)"
    lag, ncc = best_alignment(chunk, ref)
    assert ncc >= 0.9, f"played audio after recovery differs from the file: ncc={ncc:.3f}"
    # it is the part of the file the graph's clock had reached (not seconds-old queued audio)
    assert abs(lag / sr - (at - 1.25)) < 0.5, (lag / sr, at)
    st = eng.stats()["nodes"]["out"]
    assert st["reopens"] >= 1 and st["dropped_frames"] > 0
    # what the outage cost, including the audio queued for the dead device (it said 0.0 s)
    assert next(e for e in status if e.kind == "recovered").count > 0
