"""The embedding API as a voice-assistant prototype uses it: turns, callbacks, lifecycle, feed().

Real graphs, real models, real recorded speech pushed with ``Engine.feed`` (no sound card).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from engine.errors import EngineError
from engine.events import Event
from engine.graph import parse_graph
from engine.runtime import Engine

from .conftest import REPO, SAMPLE, load_mono, shared

VAD_GRAPH = REPO / "graphs" / "vad_monitor.toml"
CAPTIONS = REPO / "graphs" / "live_captions.toml"


def _feed_all(eng: Engine, x: np.ndarray, step: int = 4800, **kw) -> None:
    for i in range(0, len(x), step):
        eng.feed(x[i:i + step], **kw)
    eng.end_feed()


def _vad_events(x: np.ndarray, **kw) -> list[tuple[str, int]]:
    got: list[Event] = []
    eng = Engine.from_file(VAD_GRAPH, input="feed", realtime=False)
    eng.on("vad.speech_*", got.append)
    eng.start()
    _feed_all(eng, x, **kw)
    assert eng.wait(60)
    return [(e.type, e.sample) for e in got]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the shipped graphs write under out/
    return tmp_path


def test_every_segment_ends_in_one_final_or_skipped(in_tmp):
    """A turn-taking loop can wait for 'the answer' to each speech_stopped: every segment the
    recogniser takes ends in exactly one transcript.final or transcript.skipped with the same
    start_sample; speech_end_sample (no padding) lies inside the segment."""
    x, _ = load_mono(SAMPLE, 48000)
    got: list[Event] = []
    # a 1.6 s minimum utterance skips the short phrases ("ask not") as too short
    eng = Engine.from_file(CAPTIONS, input="feed", realtime=False,
                           params={"asr": {"min_utterance_ms": 1600}})
    eng.on("vad.speech_stopped", got.append)
    eng.on("transcript.final", got.append)
    eng.on("transcript.skipped", got.append)
    eng.start()
    _feed_all(eng, x)
    assert eng.wait(120)
    stops = [e for e in got if e.type == "vad.speech_stopped"]
    answers = [e for e in got if e.type != "vad.speech_stopped"]
    assert len(stops) >= 4
    assert sorted(e.start_sample for e in answers) == sorted(e.start_sample for e in stops)
    skipped = [e for e in answers if e.type == "transcript.skipped"]
    assert skipped and all(e.reason == "too_short" for e in skipped)
    assert any(e.type == "transcript.final" for e in answers)
    pad = int(0.2 * 16000)  # live_captions.toml: speech_pad_ms = 200
    by_start = {e.start_sample: e for e in stops}
    for e in answers:
        st = by_start[e.start_sample]
        assert e.sample == st.sample
        assert st.start_sample < st.speech_end_sample <= st.sample
        assert st.sample - st.speech_end_sample <= pad
        if e.type == "transcript.final":
            assert e.speech_end_sample == st.speech_end_sample


def test_callback_errors_are_logged_and_delivery_goes_on(in_tmp, caplog):
    x, _ = load_mono(SAMPLE, 48000)
    seen: list[Event] = []

    def bad(ev: Event) -> None:
        seen.append(ev)
        raise RuntimeError("my callback failed")

    eng = Engine.from_file(VAD_GRAPH, input="feed", realtime=False)
    eng.on("vad.speech_started", bad)
    with caplog.at_level(logging.ERROR, logger="engine"):
        eng.start()
        _feed_all(eng, x)
        assert eng.wait(60)
    assert len(seen) >= 4  # every start still delivered
    logged = [r for r in caplog.records if "my callback failed" in str(r.exc_info)]
    assert len(logged) == 3  # the first three, with their traceback; the rest counted
    assert eng.stats()["events"]["engine.callback_error"] == len(seen)


def test_stop_from_a_callback_returns_at_once(in_tmp):
    x, _ = load_mono(SAMPLE, 48000)
    took: list[float] = []

    def cb(ev: Event) -> None:
        t = time.monotonic()
        eng.stop()
        took.append(time.monotonic() - t)

    eng = Engine.from_file(VAD_GRAPH, input="feed", feed_idle_s=0.5)
    eng.on("vad.speech_stopped", cb)
    eng.start()
    eng.feed(x[: 48000 * 4])
    assert eng.wait(20)
    assert took and took[0] < 0.5
    assert not [t for t in threading.enumerate() if t.name.startswith(("engine", "worker"))]


def test_sys_exit_in_a_callback_stops_the_engine_and_is_raised_by_wait(in_tmp):
    x, _ = load_mono(SAMPLE, 48000)

    def cb(ev: Event) -> None:
        sys.exit(3)

    eng = Engine.from_file(VAD_GRAPH, input="feed", feed_idle_s=0.5)
    eng.on("vad.speech_started", cb)
    eng.start()
    eng.feed(x[: 48000 * 4])
    with pytest.raises(SystemExit):
        eng.wait(20)
    assert not eng.running


def test_run_raises_ctrl_c_after_draining(in_tmp):
    eng = Engine.from_file(VAD_GRAPH, input=SAMPLE)  # real time: 11 s
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))  # as Ctrl-C does
    timer.start()
    t = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        eng.run()
    assert time.monotonic() - t < 5 and not eng.running


def test_lifecycle_misuse_is_refused_at_once(in_tmp):
    eng = Engine.from_file(VAD_GRAPH, input="feed")
    with pytest.raises(EngineError, match=r"wait\(\) before start\(\)"):
        eng.wait(1)
    t = time.monotonic()
    Engine.from_file(VAD_GRAPH, input="feed").stop()  # never started: nothing to wait for
    assert time.monotonic() - t < 1
    eng.start()
    eng.feed(np.zeros(4800, np.float32))
    eng.stop()
    with pytest.raises(EngineError, match="after the engine stopped"):
        eng.feed(np.zeros(480, np.float32))
    with pytest.raises(EngineError, match="runs once"):
        eng.start()
    with pytest.raises(EngineError, match="feed_idle_s applies"):
        Engine.from_file(VAD_GRAPH, input=SAMPLE, feed_idle_s=0.5)


def test_engines_release_their_models(in_tmp):
    """Each conversation can use a new Engine: stop() releases the onnxruntime sessions (RSS
    stays flat over several engines without waiting for the garbage collector)."""
    import gc

    import psutil

    x, _ = load_mono(SAMPLE, 48000)
    rss = []
    gc.disable()
    try:
        for _ in range(4):
            eng = Engine.from_file(CAPTIONS, input="feed", realtime=False)
            eng.start()
            _feed_all(eng, x[: 48000 * 3])
            assert eng.wait(60)
            assert eng.node("asr").model is None and eng.node("vad").model is None
            del eng
            rss.append(psutil.Process().memory_info().rss)
    finally:
        gc.enable()
    # a kept model would add about 150 MB per engine (146 MB of Whisper ONNX, loaded); the
    # allocator alone moves RSS by 20-45 MB over these engines (measured), so 100 MB over two
    assert rss[-1] - rss[1] < 100 * 2**20, [r >> 20 for r in rss]


def test_exit_while_the_engine_is_busy_is_clean(tmp_path):
    """Leaving Python without stop() while the recogniser works: a clean exit (it aborted with
    'terminate called without an active exception' when native threads were torn down)."""
    code = f"""
import numpy as np, soundfile as sf
from engine.runtime import Engine
x, r = sf.read({str(SAMPLE)!r}, dtype="float32")
eng = Engine.from_file({str(CAPTIONS)!r}, input="feed", realtime=False)
eng.start()
eng.feed(np.tile(x, 3)[:, None] if eng.feed_format[0] == r else x, rate=r)
print("leaving", flush=True)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "leaving" in r.stdout and "terminate" not in r.stderr


def test_feed_converts_what_an_application_has(in_tmp, caplog):
    """Audio at another rate (rate=), stereo into a mono graph and int16 give the same segments
    as the graph's own format; shapes and types that cannot be right are refused with the fix."""
    x, _ = load_mono(shared("speech/jfk.flac"), 48000)
    want = _vad_events(x)
    assert len(want) == 8
    x16, _ = load_mono(shared("speech/jfk.flac"), 16000)
    got = _vad_events(x16, step=1600, rate=16000)
    assert [k for k, _ in got] == [k for k, _ in want]
    # the resampler's delay (a few samples) and the rate change move boundaries < one window
    assert max(abs(a - b) for (_, a), (_, b) in zip(got, want, strict=True)) <= 512
    stereo = np.stack([x, x], axis=1)
    assert _vad_events(stereo) == want

    eng = Engine.from_file(VAD_GRAPH, input="feed")
    assert eng.feed_format == (48000, 1)
    eng.start()
    try:
        with pytest.raises(EngineError, match="list of integers"):
            eng.feed([0, 100, -100])
        with pytest.raises(EngineError, match=r"x\.T"):
            eng.feed(np.zeros((2, 4800), np.float32))
        with pytest.raises(EngineError, match="frames x channels"):
            eng.feed(np.zeros((2, 2, 2), np.float32))
        with pytest.raises(EngineError, match="np.frombuffer"):
            eng.feed(b"\x00\x01" * 100)
        with caplog.at_level(logging.WARNING, logger="engine"):
            eng.feed(np.full(480, 12000.0, np.float32))
        assert any("divide by 32768" in r.message for r in caplog.records)
        with pytest.raises(EngineError, match="rate changed from 48000 Hz to 16000 Hz"):
            eng.feed(np.zeros(480, np.float32), rate=16000)  # a stream keeps its first rate
    finally:
        eng.stop()


def test_a_pattern_that_matches_nothing_is_warned(in_tmp, caplog):
    eng = Engine.from_file(VAD_GRAPH, input="feed")
    with caplog.at_level(logging.WARNING, logger="engine"):
        eng.on("transcript.finals", print)
        eng.on("vad.*", print)
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "did you mean 'transcript.final'" in msgs[0]
    eng.stop()


def _segments(tmp_path, x: np.ndarray, quantum_ms: float = 10.0, vad: str = "",
              **params) -> tuple[list, list]:
    wav = tmp_path / "in.wav"
    sf.write(wav, x, 16000, subtype="FLOAT")
    extra = "".join(f", {k} = {v!r}".replace("'", '"') for k, v in params.items())
    spec = parse_graph(f"""
[[nodes]]
id = "src"
type = "source.file"
params = {{ path = "{wav}" }}
[[nodes]]
id = "vad"
type = "vad.silero"
in = {{ audio = "src.audio" }}
params = {{ {vad} }}
[[nodes]]
id = "seg"
type = "sink.segments"
in = {{ audio = "vad.speech", events = "vad.events" }}
params = {{ dir = "{tmp_path / 'turns'}"{extra} }}
""")
    stops: list[Event] = []
    segs: list[Event] = []
    eng = Engine(spec, realtime=False, quantum_ms=quantum_ms)
    eng.on("vad.speech_stopped", stops.append)
    eng.on("speech.segment", segs.append)
    eng.run()
    return stops, segs


def test_segments_deliver_each_turns_audio(in_tmp):
    """sink.segments: each segment's audio is exactly the input between its boundaries, in
    the event and in its WAV file; the same for another block size; longer segments come in
    parts of max_s that join up; the event's JSON leaves the samples out."""
    import json

    x, _ = load_mono(SAMPLE, 16000)
    stops, segs = _segments(in_tmp, x)
    assert len(segs) == len(stops) >= 4
    for st, sg in zip(stops, segs, strict=True):
        assert (sg.start_sample, sg.sample, sg.speech_end_sample) == \
            (st.start_sample, st.sample, st.speech_end_sample)
        np.testing.assert_array_equal(sg.audio[:, 0], x[sg.start_sample:sg.sample])
        on_disk, rate = sf.read(sg.path, dtype="float32")
        assert rate == 16000 and np.max(np.abs(on_disk - sg.audio[:, 0])) <= 1 / 32768
    assert "audio" not in json.loads(json.dumps(segs[0].to_dict()))

    _, segs32 = _segments(in_tmp, x, quantum_ms=32)
    assert [(s.start_sample, s.sample) for s in segs32] == [(s.start_sample, s.sample)
                                                            for s in segs]

    _, parts = _segments(in_tmp, x, max_s=1.0)
    assert max(len(p.audio) for p in parts) == 16000 and len(parts) > len(segs)
    whole = []
    for p in parts:
        whole.append(p.audio[:, 0])
        if p.last:
            start = p.sample - sum(len(a) for a in whole)
            np.testing.assert_array_equal(np.concatenate(whole), x[start:p.sample])
            whole = []
    assert [p.part for p in parts if p.last] != [0] * len(segs)  # some came in parts


def test_segments_follow_the_vads_split_of_long_speech(in_tmp):
    """A VAD split (max_speech_s) lands inside audio already released: each segment's audio
    must still be exactly the input between its own boundaries."""
    from .test_captions import LJ8, _run_on

    x = _run_on(LJ8)
    stops, segs = _segments(in_tmp, x, vad="max_speech_s = 12")
    assert len(stops) >= 5
    assert [(s.start_sample, s.sample) for s in segs] == [(s.start_sample, s.sample)
                                                         for s in stops]
    for sg in segs:
        np.testing.assert_array_equal(sg.audio[:, 0], x[sg.start_sample:sg.sample])
    # with parts (max_s) too: a split can land inside a part already delivered; every part is
    # still exactly its stretch of the input, and the parts tile the speech in order
    stops, parts = _segments(in_tmp, x, vad="max_speech_s = 8", max_s=3.0)
    assert len(stops) >= 5
    for sg in parts:
        assert sg.sample >= sg.start_sample
        np.testing.assert_array_equal(sg.audio[:, 0], x[sg.start_sample:sg.sample])
    assert all(a.sample <= b.start_sample for a, b in zip(parts, parts[1:], strict=False))
    assert sum(len(p.audio) for p in parts) == sum(s.sample - s.start_sample for s in stops)


CHAIN = '''
[[nodes]]
id = "mic"
type = "source.microphone"
params = { sample_rate = 48000 }
[[nodes]]
id = "to16k"
type = "dsp.resample"
in = { audio = "mic.audio" }
params = { rate = 16000 }
[[nodes]]
id = "g"
type = "dsp.gain"
in = { audio = "to16k.audio" }
params = { db = -6 }
[[nodes]]
id = "out"
type = "sink.array"
in = { audio = "g.audio" }
'''


def test_process_runs_a_graph_on_an_array_like_an_effect_chain():
    """engine.runtime.process: an array in (any rate), the sink.array's array out, aligned with
    the input (the feed's and the graph's resampler delays are taken out), nothing cut."""
    from engine.runtime import process

    fs = 44100
    x = np.sin(2 * np.pi * 440 * np.arange(fs) / fs).astype(np.float32)
    y = process(parse_graph(CHAIN), x, rate=fs)["out"]
    assert y.shape == (16000, 1)
    ref = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    np.testing.assert_allclose(y[100:-100, 0], ref[100:-100], atol=3e-3)
    no_sink = CHAIN.replace('type = "sink.array"', 'type = "sink.console"') \
        .replace('in = { audio = "g.audio" }', 'in = { events = "mic.status" }')
    with pytest.raises(EngineError, match="no sink.array node"):
        process(parse_graph(no_sink), x, rate=fs)
    # shorter than the resamplers' delays: still aligned, still the right length
    click = np.zeros(50, np.float32)
    click[20] = 1.0
    y = process(parse_graph(CHAIN), click, rate=fs)["out"][:, 0]
    assert 18 <= len(y) <= 19  # 50 frames at 44.1 kHz are 18.1 at 16 kHz (it was 70)
    assert int(np.argmax(np.abs(y))) == round(20 * 16000 / fs)
    two_mics = CHAIN + '[[nodes]]\nid = "mic2"\ntype = "source.microphone"\n'
    with pytest.raises(EngineError, match="2 microphones"):
        process(parse_graph(two_mics), x, rate=fs)
