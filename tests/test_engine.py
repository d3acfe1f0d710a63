"""Engine core: embedding API, queues and their policies, node errors, memory, every graph."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf

from engine.errors import GraphError
from engine.events import Event, NodeError
from engine.graph import load_graph, parse_graph
from engine.node import AUDIO, EVENTS, AudioSpec, Node, NodeIO, register
from engine.nodes.gain import Gain
from engine.queues import BoundedQueue
from engine.ring import AudioRing
from engine.runtime import Engine

from .conftest import REPO, load_mono, shared

GRAPHS = sorted((REPO / "graphs").glob("*.toml"))


@pytest.mark.parametrize("policy,expect_items,expect_drops", [
    ("drop_oldest", [2, 3, 4], 2), ("drop_newest", [0, 1, 2], 2)])
def test_queue_policies_count_drops(policy, expect_items, expect_drops):
    q = BoundedQueue(3, policy)
    for i in range(5):
        q.put(i)
    q.put("end", force=True)  # a marker past a full queue: kept, but not counted as depth
    assert [q.get(0.1) for _ in range(4)] == expect_items + ["end"]
    assert q.drops == expect_drops and q.max_depth == 3


def test_blocking_queue_waits_for_room():
    q = BoundedQueue(2, "block")
    q.put(0)
    q.put(1)
    t = threading.Thread(target=lambda: (time.sleep(0.2), q.get()))
    t.start()
    t0 = time.monotonic()
    q.put(2)
    assert time.monotonic() - t0 >= 0.15 and q.drops == 0
    t.join()


def test_ring_wraps_and_counts():
    r = AudioRing(8, 1)
    out = np.zeros((5, 1), np.float32)
    for k in range(10):
        x = np.arange(k * 5, k * 5 + 5, dtype=np.float32)[:, None]
        assert r.write(x) == 5
        assert r.read_into(out) == 5
        assert np.array_equal(out, x)
    assert r.write(np.ones((10, 1), np.float32)) == 8 and r.overflows == 2
    big = np.zeros((12, 1), np.float32)
    assert r.read_into(big, zero_fill=True) == 8 and r.underflows == 4


@register
class _Exploding(Gain):
    """Test-only node type: a 0 dB dsp.gain that raises on every third block, to check error
    containment."""

    type_name = "test.exploding"

    def prepare(self, specs):
        super().prepare(specs)
        self.n = 0

    def process(self, io: NodeIO) -> None:
        self.n += 1
        if self.n % 3 == 0:
            raise RuntimeError("boom")
        super().process(io)


@register
class _Complaining(_Exploding):
    """Test-only node type: passes audio through and, every tenth block, reports a problem it
    survived as an ``engine.node_error`` event (as a monitor whose evidence clip could not be
    saved does), without raising."""

    type_name = "test.complaining"
    outputs = {"audio": AUDIO, "events": EVENTS}

    def process(self, io: NodeIO) -> None:
        self.n += 1
        Gain.process(self, io)
        if self.n % 10 == 0:
            io.emit("events", NodeError(io.start["audio"], 16000, self.id,
                                        message="clip not saved"))


def test_node_exception_becomes_event_and_graph_keeps_running(tmp_path, caplog):
    wav = tmp_path / "in.wav"
    sf.write(wav, np.random.default_rng(0).standard_normal((16000, 1)).astype(np.float32) * .1,
             16000)
    out = tmp_path / "out.wav"
    spec = parse_graph(f"""
[[nodes]]
id = "src"
type = "source.file"
params = {{ path = "{wav}" }}
[[nodes]]
id = "x"
type = "test.exploding"
in = {{ audio = "src.audio" }}
[[nodes]]
id = "rec"
type = "sink.wav"
in = {{ audio = "x.audio" }}
params = {{ path = "{out}" }}
""")
    errors: list[Event] = []
    eng = Engine(spec, realtime=False)
    eng.on("engine.node_error", errors.append)
    stats = eng.run()
    assert errors and "boom" in errors[0].message and errors[0].node == "x"
    # stamped where each failing block starts (every third 10 ms block; it said the position
    # of the node's last output, which stops moving when the node fails)
    assert [e.sample for e in errors[:3]] == [320, 800, 1280]
    n_err = stats["nodes"]["x"]["errors"]
    assert n_err >= 33
    assert 16000 - n_err * 160 <= sf.info(out).frames < 16000  # the other blocks went through

    # embedded without a subscriber for node errors, they go to the log (logger "engine")
    import logging

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="engine"):
        Engine(spec, realtime=False).run()
    assert [r.getMessage() for r in caplog.records][:2] == [  # the first with its traceback
        "nodes[x] (test.exploding): first error, traceback follows (later ones are counted "
        "and reported as engine.node_error)", "x: test.exploding raised RuntimeError: boom"]


def test_cli_run_exits_3_when_a_node_raised(tmp_path, capsys, monkeypatch):
    """A batch job must be able to tell a complete run from one whose outputs miss the audio of
    failing blocks: `run` reaches the end either way, but exits 3 (not 0) after node errors."""
    from engine.cli import main

    wav = tmp_path / "in.wav"
    sf.write(wav, np.zeros((8000, 1), np.float32), 16000)
    g = tmp_path / "g.toml"
    out = tmp_path / "out.wav"

    def graph(node_type: str) -> str:
        return (f'[[nodes]]\nid = "src"\ntype = "source.file"\nparams = {{ path = "{wav}" }}\n'
                f'[[nodes]]\nid = "x"\ntype = "{node_type}"\nin = {{ audio = "src.audio" }}\n'
                f'[[nodes]]\nid = "rec"\ntype = "sink.wav"\nin = {{ audio = "x.audio" }}\n'
                f'params = {{ path = "{out}" }}\n')

    g.write_text(graph("test.exploding"))
    assert main(["run", str(g), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "finished with node errors (x: 17)" in err and "exit status 3" in err, err
    # errors a node reports and survives (a clip not saved, a webhook down) count too
    g.write_text(graph("test.complaining"))
    stats = tmp_path / "stats.json"
    import io

    from engine.console import CONSOLE

    monkeypatch.setattr(CONSOLE, "stream", io.StringIO())
    assert main(["run", str(g), "--quiet", "--stats-json", str(stats)]) == 3
    err, shown = capsys.readouterr().err, CONSOLE.stream.getvalue()
    assert "finished with node errors (x: 5)" in err and "x: error at 0.09 s: clip not saved" \
        in shown, (shown, err)
    assert json.loads(stats.read_text())["nodes"]["x"]["errors"] == 5
    g.write_text(graph("dsp.gain"))
    assert main(["run", str(g), "--quiet"]) == 0
    assert "node errors" not in capsys.readouterr().err


def test_feed_api_delivers_events_to_callbacks(tmp_path):
    """Embedding: the application captures audio itself and pushes it with eng.feed()."""
    x, sr = load_mono(shared("speech/jfk.flac"), 48000)
    got: list[Event] = []
    threads: set[str] = set()

    def cb(ev: Event) -> None:
        got.append(ev)
        threads.add(threading.current_thread().name)

    with Engine.from_file(REPO / "graphs" / "vad_monitor.toml", input="feed") as eng:
        eng.on("vad.*", cb)
        for i in range(0, len(x), 4800):  # as an application would: 100 ms at a time
            eng.feed(x[i:i + 4800])
        eng.end_feed()
        assert eng.wait(60)
    starts = [e for e in got if e.type == "vad.speech_started"]
    stops = [e for e in got if e.type == "vad.speech_stopped"]
    assert starts and len(stops) == len(starts)
    assert threads == {"engine-dispatch"}


def _fed_vad_events(x: np.ndarray, realtime: bool = False) -> tuple[list, dict]:
    eng = Engine.from_file(REPO / "graphs" / "vad_monitor.toml", input="feed",
                           realtime=realtime)
    got: list[Event] = []
    eng.on("vad.speech_*", got.append)
    eng.start()
    accepted = eng.feed(x)  # all at once
    eng.end_feed()
    assert eng.wait(120)
    eng.stop()
    st = eng.stats()
    st["accepted"] = accepted
    return [(e.type, e.sample) for e in got], st


def test_feed_takes_long_and_integer_audio_without_loss(tmp_path, monkeypatch):
    """One feed() of 44 s (more than the feed's 30 s buffer) waits for room instead of dropping
    the rest; int16 PCM is scaled to [-1, 1) and gives exactly the float audio's events."""
    monkeypatch.chdir(tmp_path)
    x, sr = load_mono(shared("speech/jfk.flac"), 48000)
    x4 = np.tile(x, 4)
    ev, st = _fed_vad_events(x4)
    assert st["accepted"] == len(x4) and st["nodes"]["mic"]["ring_overflow_frames"] == 0
    assert abs(st["audio_seconds"] - len(x4) / sr) < 0.011
    assert len(ev) >= 16
    pcm = np.round(np.clip(x, -1, 32767 / 32768) * 32768).astype(np.int16)
    ev16, _ = _fed_vad_events(pcm)
    evf, _ = _fed_vad_events(pcm.astype(np.float32) / 32768)
    assert ev16 == evf and len(ev16) == 8


def test_feed_misuse_is_refused_clearly(tmp_path, monkeypatch):
    from engine.errors import EngineError

    monkeypatch.chdir(tmp_path)
    eng = Engine.from_file(REPO / "graphs" / "vad_monitor.toml", input="feed")
    with pytest.raises(EngineError, match=r"before start\(\)"):
        eng.feed(np.zeros(480, np.float32))
    eng.start()
    with pytest.raises(EngineError, match="float or integer"):
        eng.feed(np.array(["a", "b"]))
    # NaN would reach the models (one in the first 0.1 s lost a whole turn to '!!!!!!')
    bad = np.zeros(4800, np.float32)
    bad[[10, 20]] = np.nan, np.inf
    with pytest.raises(EngineError, match=r"NaN or infinite samples \(2 of 4800\): nothing"):
        eng.feed(bad)
    eng.feed(np.zeros(4800, np.float32))
    eng.end_feed()
    with pytest.raises(EngineError, match=r"after end_feed\(\)"):
        eng.feed(np.zeros(480, np.float32))
    assert eng.wait(30)
    eng.stop()


def test_numpy_numbers_in_events_are_json_numbers():
    """A node's event fields often come out of NumPy arithmetic (np.float32): sink.events and
    the web API wrote them as strings ("peak": "0.14601727")."""
    from engine.events import SoundEventStarted

    ev = SoundEventStarted(np.int64(160), 16000, "m", group="dog", score=np.float32(0.5),
                           top_classes=(("Dog", np.float32(0.25)),))
    assert json.loads(json.dumps(ev.to_dict(), default=str)) == {
        "type": "sound.started", "time_s": 0.01, "sample": 160, "sample_rate": 16000,
        "node": "m", "group": "dog", "score": 0.5, "top_classes": [["Dog", 0.25]]}


def test_subscribing_checks_its_arguments(tmp_path):
    """A callback that is not callable was accepted and then logged a TypeError on every
    event; a pattern that is not a string failed with len() of None."""
    eng = Engine.from_file(REPO / "graphs" / "vad_monitor.toml", input="feed")
    with pytest.raises(TypeError, match="callback must be callable"):
        eng.on("vad.*", 42)
    with pytest.raises(TypeError, match="pattern is an event type or a pattern"):
        eng.on(None, print)


def test_bounded_memory_over_ten_minutes(tmp_path):
    """A 10-minute stream fed as fast as possible: RSS grows < 20 MB after warm-up."""
    src = shared("speech/librispeech-test-clean__1089-134686-0000.flac")
    spec = parse_graph(f"""
[[nodes]]
id = "src"
type = "source.file"
params = {{ path = "{src}", loop = true }}
[[nodes]]
id = "rs"
type = "dsp.resample"
in = {{ audio = "src.audio" }}
params = {{ rate = 48000 }}
[[nodes]]
id = "rs2"
type = "dsp.resample"
in = {{ audio = "rs.audio" }}
params = {{ rate = 16000 }}
[[nodes]]
id = "vad"
type = "vad.webrtc"
in = {{ audio = "rs2.audio" }}
[[nodes]]
id = "log"
type = "sink.events"
in = {{ events = "vad.events" }}
params = {{ path = "{tmp_path / 'events.jsonl'}" }}
""")
    proc = psutil.Process()
    eng = Engine(spec, realtime=False)
    eng.start()
    rss = []
    while eng.audio_seconds < 600 and eng.running:
        time.sleep(0.2)
        if eng.audio_seconds > 60:
            rss.append(proc.memory_info().rss)
    eng.stop()
    assert eng.audio_seconds >= 600
    growth = (max(rss[len(rss) // 10:]) - rss[0]) / 1e6
    assert growth < 20, f"RSS grew {growth:.1f} MB over the stream"


@pytest.mark.parametrize("graph", GRAPHS, ids=[g.stem for g in GRAPHS])
def test_every_graph_validates_and_runs_on_a_file(graph: Path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # graphs may write recordings / logs relative to cwd
    spec = load_graph(graph)
    speech = shared("speech/jfk.flac")
    has_mic = any(n.type == "source.microphone" for n in spec.nodes)
    eng = Engine(spec, input=speech if has_mic else None, realtime=False)
    eng.prepare()
    eng.start()
    eng.wait(120)
    eng.stop()
    st = eng.stats()
    assert st["audio_seconds"] > 1.0
    assert all(n["errors"] == 0 for n in st["nodes"].values()), st["nodes"]


def test_realtime_file_run_is_paced_by_the_clock(tmp_path):
    wav = tmp_path / "two_s.wav"
    sf.write(wav, np.zeros((32000, 1), np.float32), 16000)
    spec = parse_graph(f'[[nodes]]\nid="s"\ntype="source.file"\nparams={{path="{wav}"}}\n')
    t0 = time.monotonic()
    Engine(spec, realtime=True).run()
    assert 1.9 < time.monotonic() - t0 < 3.0


def test_specs_negotiated_through_resampler(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros((4410, 2), np.float32), 44100)
    spec = parse_graph(f"""
[[nodes]]
id = "s"
type = "source.file"
params = {{ path = "{wav}" }}
[[nodes]]
id = "m"
type = "dsp.mix"
in = {{ audio = "s.audio" }}
[[nodes]]
id = "r"
type = "dsp.resample"
in = {{ audio = "m.audio" }}
params = {{ rate = 16000 }}
""")
    eng = Engine(spec, realtime=False)
    specs = {st.id: st.specs for st in eng._states}
    assert specs["m"]["audio"] == AudioSpec(44100, 1, specs["s"]["audio"].max_block)
    assert specs["r"]["audio"].sample_rate == 16000




@pytest.mark.parametrize("quantum_ms", [10, 7])
def test_file_source_resamples_to_the_rate_asked_for(tmp_path, quantum_ms):
    """source.file with sample_rate: a 44.1 kHz stereo file comes out at 16 kHz mono, as long
    as it should be, with the file's timing kept (the filter delay dropped) and the same
    samples whatever the engine's quantum; it matches SciPy's polyphase resampler."""
    from scipy.signal import resample_poly

    n = 44100 + 1234
    t = np.arange(n) / 44100
    x = np.stack([0.5 * np.sin(2 * np.pi * 1000 * t), 0.3 * np.sin(2 * np.pi * 300 * t)], 1)
    wav = tmp_path / "a.wav"
    sf.write(wav, x.astype(np.float32), 44100, subtype="FLOAT")
    spec = parse_graph(f'[[nodes]]\nid="s"\ntype="source.file"\n'
                       f'params={{path="{wav}", sample_rate=16000, channels=1}}\n'
                       '[[nodes]]\nid="out"\ntype="sink.array"\nin={audio="s.audio"}\n')
    eng = Engine(spec, realtime=False, quantum_ms=quantum_ms)
    eng.run()
    y = eng._states[1].node.audio[:, 0]
    assert len(y) == -(-n * 160 // 441)
    ref = resample_poly(x.mean(axis=1), 160, 441)
    mid = slice(200, len(y) - 200)
    assert np.max(np.abs(y[mid] - ref[mid])) < 2e-3
    if quantum_ms == 7:  # block-size invariance: the 10 ms run's samples exactly
        eng10 = Engine(spec, realtime=False, quantum_ms=10)
        eng10.run()
        np.testing.assert_array_equal(y, eng10._states[1].node.audio[:, 0])


@pytest.mark.parametrize("sample_rate", [0, 8000])
def test_file_source_loops_and_resets_to_start_s(tmp_path, sample_rate):
    """A loop goes back to start_s, not to the file's first frame (with or without
    resampling; reset() shares the position)."""
    ramp = (np.arange(16000) / 16000).astype(np.float32)
    wav = tmp_path / "ramp.wav"
    sf.write(wav, ramp, 16000, subtype="FLOAT")
    spec = parse_graph(f'[[nodes]]\nid="s"\ntype="source.file"\n'
                       f'params={{path="{wav}", start_s=0.4, loop=true, '
                       f'sample_rate={sample_rate}}}\n'
                       '[[nodes]]\nid="out"\ntype="sink.array"\nin={audio="s.audio"}\n')
    eng = Engine(spec, realtime=False, max_seconds=1.5)
    eng.run()
    y = eng._states[1].node.audio[:, 0]
    rate = sample_rate or 16000
    period = round(0.6 * rate)  # 0.4 s .. 1.0 s, again and again
    assert len(y) == round(1.5 * rate)
    mid = slice(period // 4, period // 2)  # away from the loop seams (resampler smearing)
    np.testing.assert_allclose(y[mid], y[period:][mid], atol=2e-3)
    assert abs(y[period // 4] - (0.4 + 0.25 * 0.6)) < 2e-3


def test_graph_backend_applies_to_speakers_too():
    """[engine] backend = "pyaudio" reaches the speaker as well as the microphone (only the
    microphone got it); --backend overrides both, --device only the microphone."""
    from engine.runtime import _substitute_sources

    spec = parse_graph('[engine]\nbackend="pyaudio"\n[[nodes]]\nid="mic"\n'
                       'type="source.microphone"\n[[nodes]]\nid="spk"\ntype="sink.speaker"\n'
                       'in={audio="mic.audio"}\n')

    def got(**kw):
        out = _substitute_sources(spec, None, kw.get("device"), None, kw.get("backend"), False)
        return {n.id: (n.params.backend, n.params.device) for n in out.nodes}

    assert got() == {"mic": ("pyaudio", "default"), "spk": ("pyaudio", "default")}
    assert got(backend="sounddevice", device="USB") == {"mic": ("sounddevice", "USB"),
                                                         "spk": ("sounddevice", "default")}


def test_input_file_gets_the_microphones_declared_rate():
    """--input FILE in place of a 16 kHz microphone that feeds a VAD directly: the 44.1 kHz
    file is resampled to 16 kHz (it was refused: 'vad.audio needs 16000 Hz'), and the VAD
    finds the same speech as through the shipped graph's own resampler, within a frame."""
    jfk = shared("speech/jfk.flac")
    direct = parse_graph('[[nodes]]\nid="mic"\ntype="source.microphone"\n'
                         'params={sample_rate=16000}\n[[nodes]]\nid="vad"\n'
                         'type="vad.webrtc"\nin={audio="mic.audio"}\n')
    via = parse_graph('[[nodes]]\nid="mic"\ntype="source.microphone"\n[[nodes]]\n'
                      'id="rs"\ntype="dsp.resample"\nin={audio="mic.audio"}\nparams={rate=16000}'
                      '\n[[nodes]]\nid="vad"\ntype="vad.webrtc"\nin={audio="rs.audio"}\n')
    starts = []
    for spec in (direct, via):
        eng = Engine(spec, input=jfk, realtime=False)
        assert eng._states[0].specs["audio"].sample_rate == (16000 if spec is direct else 44100)
        got: list[Event] = []
        eng.on("vad.speech_started", got.append)
        eng.run()
        starts.append([e.sample for e in got])
    assert len(starts[0]) >= 3 and len(starts[0]) == len(starts[1]), starts
    assert max(abs(a - b) for a, b in zip(*starts, strict=True)) <= 480, starts


def test_stats_can_be_read_while_events_arrive():
    """An application polls ``stats()`` from its own thread while the engine runs: the
    dispatch thread adding a new event type (or a latency value) meanwhile made it raise
    'dictionary changed size during iteration' (seen in test_unsure_partials_are_not_shown on
    a busy machine; 2 of 3 runs of the bundled sample through live captions)."""
    spec = parse_graph('[[nodes]]\nid="mic"\ntype="source.microphone"\nparams={sample_rate=16000}'
                       '\n[[nodes]]\nid="vad"\ntype="vad.silero"\nin={audio="mic.audio"}\n'
                       'params={emit_probability=true}\n')
    polls = 0
    for _ in range(3):
        eng = Engine(spec, input=shared("speech/jfk.flac"), realtime=False)
        eng.start()
        while eng.running:
            eng.stats()
            polls += 1
        eng.wait(30)
        eng.stop()
        assert set(eng.stats()["latency"]) >= {"vad.speech_started", "vad.speech_stopped"}
    assert polls > 100


@register
class _SlowEmitter(Node):
    """Test-only worker node: emits an event, then works for 30 ms (as a decoder would)."""

    type_name = "test.slow_emitter"
    inputs = {"audio": AUDIO}
    outputs = {"events": "events"}
    thread = "worker"

    @dataclass(frozen=True)
    class Params:
        pass

    def prepare(self, specs):
        self.emitted = 0

    def process(self, io: NodeIO) -> None:
        x = io.audio("audio")
        io.emit("events", Event(io.start["audio"] + len(x), 16000, self.id))
        self.emitted += 1
        time.sleep(0.03)


def test_worker_events_survive_while_the_dsp_thread_runs(tmp_path):
    """A worker's emitted events must reach subscribers even when the DSP thread runs several
    quanta while the worker is still busy (regression: they were cleared under its feet)."""
    wav = tmp_path / "one_s.wav"
    sf.write(wav, np.zeros((16000, 1), np.float32), 16000)
    spec = parse_graph(f'[[nodes]]\nid="s"\ntype="source.file"\nparams={{path="{wav}"}}\n'
                       '[[nodes]]\nid="w"\ntype="test.slow_emitter"\nin={audio="s.audio"}\n')
    got: list[Event] = []
    eng = Engine(spec, realtime=True)
    eng.on("event", got.append)
    eng.run()
    assert len(got) == eng.node("w").emitted > 10
    ends = [e.sample for e in got]
    assert ends == sorted(ends) and ends[-1] == 16000  # positions intact, none lost


@register
class _QuietCounter(Node):
    """Test-only worker node on a VAD's speech port: counts its calls, with and without audio
    (``idle_quanta`` from the graph)."""

    type_name = "test.quiet_counter"
    inputs = {"audio": AUDIO}
    thread = "worker"

    @dataclass(frozen=True)
    class Params:
        idle: bool = False

    def prepare(self, specs):
        self.idle_quanta = self.params.idle
        self.calls = self.empty = 0

    def process(self, io: NodeIO) -> None:
        self.calls += 1
        self.empty += not len(io.audio("audio"))


@pytest.mark.parametrize("idle", [False, True])
def test_worker_asking_for_idle_quanta_sees_quiet_time(idle, tmp_path):
    """1 s of silence through a VAD: its speech port brings nothing, so a worker behind it is
    never called, unless it asks for idle quanta (Node.idle_quanta): then about once per 10 ms
    quantum, with an empty block, and never with more than one such block queued."""
    wav = tmp_path / "quiet.wav"
    sf.write(wav, np.zeros((16000, 1), np.float32), 16000)
    spec = parse_graph(f'[[nodes]]\nid="s"\ntype="source.file"\nparams={{path="{wav}"}}\n'
                       '[[nodes]]\nid="vad"\ntype="vad.silero"\nin={audio="s.audio"}\n'
                       '[[nodes]]\nid="w"\ntype="test.quiet_counter"\n'
                       f'in={{audio="vad.speech"}}\nparams={{idle={str(idle).lower()}}}\n')
    eng = Engine(spec, realtime=True)
    eng.run()
    w = eng.node("w")
    if idle:
        assert 80 <= w.calls == w.empty <= 110, (w.calls, w.empty)  # + end-of-stream passes
        # idle blocks do not pile up: one at most (and the end-of-stream flush behind it)
        assert eng.stats()["nodes"]["w"]["queue_max_depth"] <= 2
    else:
        assert w.calls == 0


def test_event_log_marks_each_session(tmp_path, monkeypatch):
    """sink.events appends (a restarted monitor keeps its history) and opens every run with a
    session.started line, so runs that each count time from 0 can be told apart."""
    import json

    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        Engine(load_graph(REPO / "graphs" / "vad_monitor.toml"),
               input=shared("speech/jfk.flac"), realtime=False).run()
    lines = [json.loads(x) for x in (tmp_path / "out/vad_events.jsonl").read_text().splitlines()]
    marks = [i for i, d in enumerate(lines) if d["type"] == "session.started"]
    assert len(marks) == 2 and marks[0] == 0, [d["type"] for d in lines]
    first, second = lines[1:marks[1]], lines[marks[1] + 1:]
    assert len(first) == len(second) == 8  # 4 speech segments, started + stopped
    assert [d["sample"] for d in first] == [d["sample"] for d in second]
    assert lines[0]["started_at"].endswith("+00:00")
    # which graph, listening to what (a monitor's log outlives the terminal that started it)
    assert lines[0]["graph"] == str(REPO / "graphs" / "vad_monitor.toml")
    assert lines[0]["sources"] == {"mic": str(shared("speech/jfk.flac"))}

    # a run that fails to start leaves no session.started behind (there was no session)
    from engine.errors import EngineError

    blocker = tmp_path / "blocker"
    blocker.write_text("")
    spec = load_graph(REPO / "graphs" / "live_captions.toml",
                      {"log": {"path": "out/vad_events.jsonl"},
                       "subtitles": {"srt": str(blocker / "x.srt")}})
    with pytest.raises(EngineError, match="is a file, not a folder"):
        Engine(spec, input=shared("speech/jfk.flac"), realtime=False).run()
    after = (tmp_path / "out/vad_events.jsonl").read_text().splitlines()
    assert len(after) == len(lines)


# ------------------------------------------------------------------ extending: your own nodes


def test_cli_loads_a_users_node_module(tmp_path):
    """`--plugin FILE.py` (or a module name) registers a user's node types for run / validate;
    without it the type is unknown (with the message saying so)."""
    import subprocess
    import sys

    plugin = REPO / "tests" / "data" / "plugin_meter.py"
    g = tmp_path / "g.toml"
    g.write_text('[[nodes]]\nid="mic"\ntype="source.microphone"\nparams={sample_rate=16000}\n'
                 '[[nodes]]\nid="m"\ntype="test.meter"\nin={audio="mic.audio"}\n'
                 '[[nodes]]\nid="log"\ntype="sink.events"\nin={events="m.events"}\n'
                 'params={path="-"}\n')
    cli = [sys.executable, "-m", "engine.cli"]
    r = subprocess.run([*cli, "validate", str(g)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown node type 'test.meter'" in r.stderr, r.stderr
    r = subprocess.run([*cli, "run", str(g), "--plugin", str(plugin), "--input",
                        str(shared("speech/jfk.flac")), "--fast", "--quiet"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import json

    levels = [json.loads(x) for x in r.stdout.splitlines() if '"meter.level"' in x]
    assert len(levels) == 11 and all(-60 < d["db"] < 0 for d in levels), r.stdout
    r = subprocess.run([*cli, "validate", str(g), "--plugin", "no_such_module_xyz"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--plugin no_such_module_xyz" in r.stderr
    assert "Traceback" not in r.stderr


def test_register_checks_a_node_class_when_it_is_defined():
    from engine.node import EVENTS, param

    def make(type_name="test.checked", kind=AUDIO, frozen=True, default=1.0):
        @dataclass(frozen=frozen)
        class Params:
            x: float = param(default, ge=0, le=10)

        return type("N", (Node,), {"type_name": type_name, "inputs": {"audio": kind},
                                   "outputs": {"events": EVENTS}, "Params": Params,
                                   "__module__": "user_nodes"})

    register(make())
    register(make())  # the same class again (a module reloaded): fine
    cases = [(make("dsp.gain"), "already registered by engine.nodes.gain"),
             (make(kind="Audio"), "port kind must be AUDIO or EVENTS"),
             (make(frozen=False), "must be frozen"),
             (make(default=50.0), "default 50.0 breaks its own range (le 10)")]
    for cls, needle in cases:
        with pytest.raises(TypeError, match=re.escape(needle)):
            register(cls)


@register
class _NoFormat(Node):
    """Test-only: forgets to give its renamed audio output a format."""

    type_name = "test.no_format"
    inputs = {"audio": AUDIO}
    outputs = {"out": AUDIO}

    @dataclass(frozen=True)
    class Params:
        pass


@register
class _BadNegotiate(_NoFormat):
    type_name = "test.bad_negotiate"

    def negotiate(self, inputs):
        return {"out": inputs["audio_in"]}  # a typo: KeyError


@register
class _EmitsDicts(_Exploding):
    type_name = "test.emits_dicts"
    outputs = {"audio": AUDIO, "events": "events"}

    def process(self, io: NodeIO) -> None:
        io.emit("events", {"type": "oops"})  # not an Event


def test_node_author_mistakes_are_reported_with_their_path(tmp_path):
    wav = tmp_path / "in.wav"
    sf.write(wav, np.zeros(16000, np.float32), 16000)
    base = (f'[[nodes]]\nid="src"\ntype="source.file"\nparams={{path="{wav}"}}\n'
            '[[nodes]]\nid="n"\ntype="TYPE"\nin={audio="src.audio"}\n')
    for t, needle in (("test.no_format", "negotiate() gave no format for audio output 'out'"),
                      ("test.bad_negotiate", "negotiate() raised KeyError: 'audio_in'")):
        with pytest.raises(GraphError) as ei:
            Engine(parse_graph(base.replace("TYPE", t)), realtime=False)
        assert f"nodes[n] ({t}): {needle}" in str(ei.value), str(ei.value)
    eng = Engine(parse_graph(base.replace("TYPE", "test.emits_dicts")), realtime=False)
    errors: list[Event] = []
    eng.on("engine.node_error", errors.append)
    eng.run()
    assert errors and "takes an engine.events.Event, got dict" in errors[0].message


def test_example_plugin_is_block_size_invariant():
    """The README's example node, driven by run_node as a node author would check theirs:
    regular blocks of 1 / 160 / 480 / 1024 frames and irregular ones with empty blocks give the
    same levels at the same samples, and the audio passes through unchanged."""
    import sys

    from engine.node import load_plugin
    from engine.testing import run_node

    load_plugin(str(REPO / "tests" / "data" / "plugin_meter.py"))  # as --plugin does
    mod = sys.modules["audio_engine_plugin_plugin_meter"]
    x, sr = load_mono(shared("speech/jfk.flac"), 16000)
    x = x[: 4 * sr + 1234]
    runs = {}
    for block in (1, 160, 480, 1024, (0, 1, 480, 17, 0, 1024)):
        r = run_node(mod.Meter("m", mod.Meter.Params(every_s=0.5)), x, sr, block)
        runs[block] = [(e.sample, round(e.db, 9)) for e in r.events["events"]]
        assert np.array_equal(r.audio["audio"][:, 0], x)
    first = runs[1]
    assert len(first) == 8 and all(v == first for v in runs.values()), runs


def test_gain_changes_ramp_without_a_click():
    """dsp.gain: a run-time change (Engine.set / control) moves over ramp_ms instead of
    jumping at a block boundary (a -30 dB step on a 1 kHz sine jumped by 0.48, where the sine's
    own largest step is 0.065)."""
    from engine.nodes.gain import Gain

    fs, block = 48000, 480
    t = np.arange(fs) / fs
    x = (0.5 * np.sin(2 * np.pi * 1013 * t)).astype(np.float32)[:, None]
    nd = Gain("g", Gain.Params())
    spec = AudioSpec(fs, 1, block)
    nd.prepare({"audio": nd.negotiate({"audio": spec})["audio"]})
    io = NodeIO("g", {"audio": np.zeros((block, 1), np.float32)}, [])
    out = []
    for i in range(0, fs, block):
        if i == 50 * block:
            nd.control({"db": -30.0})
        io._in = {"audio": x[i:i + block]}
        nd.process(io)
        out.append(io.out("audio")[:block].copy())
    y = np.concatenate(out)[:, 0]
    own = np.abs(np.diff(x[:, 0])).max()
    assert np.abs(np.diff(y)).max() <= 1.01 * own
    j = 50 * block + 480  # 10 ms later the new gain holds exactly
    np.testing.assert_allclose(y[j:], x[j:, 0] * np.float32(10 ** (-30 / 20)), rtol=1e-6)
    np.testing.assert_array_equal(y[:50 * block], x[:50 * block, 0])


def test_set_refuses_what_the_node_would_refuse(tmp_path):
    """Engine.set checks the values on the caller's thread: a typo raises there and then (it
    was only reported later, as a node error)."""
    from engine.errors import ParamError

    wav = tmp_path / "in.wav"
    sf.write(wav, np.zeros((4800, 1), np.float32), 48000)
    spec = parse_graph(f'[[nodes]]\nid = "src"\ntype = "source.file"\n'
                       f'params = {{ path = "{wav}" }}\n'
                       '[[nodes]]\nid = "g"\ntype = "dsp.gain"\nin = { audio = "src.audio" }\n'
                       '[[nodes]]\nid = "sp"\ntype = "spatial.hrtf"\nin = { audio = "g.audio" }\n')
    eng = Engine(spec, realtime=False)
    with pytest.raises(ParamError, match="unknown key 'azimuht' .did you mean 'azimuth'"):
        eng.set("sp", azimuht=30)
    with pytest.raises(ParamError, match="db = a number"):
        eng.set("g", db="loud")
    with pytest.raises(ParamError, match="takes no controls"):
        eng.set("src", path="other.wav")
    eng.set("sp", azimuth=30)
    eng.set("g", db=-6)
    eng.run()
    assert eng.stats()["nodes"]["sp"]["controls_applied"] == 1


@register
class _Sum2(Node):
    """Test-only node type with two audio inputs (for run_node's dict form)."""

    type_name = "test.sum2"
    inputs = {"a": AUDIO, "b": AUDIO}
    outputs = {"audio": AUDIO}

    @dataclass(frozen=True)
    class Params:
        pass

    def negotiate(self, inputs):
        return {"audio": inputs["a"]}

    def process(self, io: NodeIO) -> None:
        a, b = io.audio("a"), io.audio("b")
        np.add(a, b, out=io.out("audio")[: len(a)])
        io.produced("audio", len(a))


def test_run_node_drives_several_audio_inputs():
    from engine.testing import run_node

    a = np.arange(1000, dtype=np.float32)
    b = np.ones(1000, np.float32)
    out = run_node(_Sum2("s", _Sum2.Params()), {"a": a, "b": b}, 16000, [7, 480, 0]).audio
    np.testing.assert_array_equal(out["audio"][:, 0], a + 1)
    with pytest.raises(ValueError, match="same length"):
        run_node(_Sum2("s", _Sum2.Params()), {"a": a, "b": b[:10]}, 16000, 160)


def _merge_graph(wav: Path, out: Path) -> str:
    """A click through 44.1k -> 48k directly (a) and through 44.1k -> 16k -> 48k (b)."""
    return f'''
[[nodes]]
id = "src"
type = "source.file"
params = {{ path = "{wav}" }}
[[nodes]]
id = "r1"
type = "dsp.resample"
in = {{ audio = "src.audio" }}
params = {{ rate = 48000 }}
[[nodes]]
id = "ra"
type = "dsp.resample"
in = {{ audio = "src.audio" }}
params = {{ rate = 16000 }}
[[nodes]]
id = "rb"
type = "dsp.resample"
in = {{ audio = "ra.audio" }}
params = {{ rate = 48000 }}
[[nodes]]
id = "m"
type = "dsp.merge"
in = {{ a = "r1.audio", b = "rb.audio" }}
[[nodes]]
id = "rec"
type = "sink.wav"
in = {{ audio = "m.audio" }}
params = {{ path = "{out}" }}
'''


def test_merge_aligns_paths_of_different_latency(tmp_path):
    """dsp.merge puts streams side by side and compensates the latencies declared along their
    paths (the 16 kHz detour lags 318 samples more at 48 kHz): a click simultaneous at the
    source is simultaneous in both output channels."""
    fs = 44100
    x = np.zeros(fs, np.float32)
    x[fs // 2] = 1.0
    wav, out = tmp_path / "click.wav", tmp_path / "merged.wav"
    sf.write(wav, x, fs, subtype="FLOAT")
    eng = Engine(parse_graph(_merge_graph(wav, out)), realtime=False)
    assert eng.node("m").delays == {"a": 318, "b": 0}
    eng.run()
    y, rate = sf.read(out)
    assert rate == 48000 and y.shape[1] == 2
    peaks = [int(np.argmax(np.abs(y[:, c]))) for c in range(2)]
    assert peaks[0] == peaks[1], peaks
    assert len(y) >= 48000  # nothing cut at the end


def test_merge_output_does_not_depend_on_the_block_size():
    from engine.nodes.merge import Merge
    from engine.testing import run_node

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3000, 1)), rng.standard_normal((3000, 2))
    outs = [run_node(Merge("m", Merge.Params()), {"a": a, "b": b}, 16000, blk).audio["audio"]
            for blk in (1, 160, 480, [0, 7, 480, 13])]
    for o in outs:
        np.testing.assert_array_equal(o, outs[0])
    np.testing.assert_array_equal(outs[0], np.hstack([a, b]).astype(np.float32))


def test_merge_refuses_mixed_rates_with_the_fix():
    from engine.errors import GraphError

    g = ('[[nodes]]\nid = "x"\ntype = "source.file"\nparams = { path = "%s" }\n'
         '[[nodes]]\nid = "r"\ntype = "dsp.resample"\nin = { audio = "x.audio" }\n'
         'params = { rate = 16000 }\n'
         '[[nodes]]\nid = "m"\ntype = "dsp.merge"\nin = { a = "x.audio", b = "r.audio" }\n')
    wav = REPO / "engine" / "data" / "samples" / "jfk.flac"
    with pytest.raises(GraphError, match="inputs must share one sample rate.*dsp.resample"):
        Engine(parse_graph(g % wav), realtime=False)
    with pytest.raises(GraphError, match="use a dsp.merge node"):
        parse_graph((g % wav).replace('in = { a = "x.audio", b = "r.audio" }',
                                      'in = { a = ["x.audio", "r.audio"], b = "r.audio" }'))


@register
class _SlowFlush(Node):
    """Test-only DSP node: light per block, waits 150 ms in flush (as a speaker draining)."""

    type_name = "test.slow_flush"
    inputs = {"audio": AUDIO}

    @dataclass(frozen=True)
    class Params:
        pass

    def process(self, io: NodeIO) -> None:
        pass

    def flush(self, io: NodeIO) -> None:
        time.sleep(0.15)


@pytest.mark.parametrize("thread", ["dsp", "worker"])
def test_a_drain_at_the_end_is_not_counted_as_a_quantums_cpu(tmp_path, thread):
    """Per-quantum CPU figures are what glitches are diagnosed with: a node's end-of-stream
    flush (a speaker waiting for its buffer to play out) is reported apart, as flush_ms
    (regression: sink.speaker showed a 50-160 ms 'cpu max' that was only its drain), on a
    worker thread too (an ASR's last decode: flush_ms stayed 0 there)."""
    wav = tmp_path / "half_s.wav"
    sf.write(wav, np.zeros((8000, 1), np.float32), 16000)
    spec = parse_graph(f'[[nodes]]\nid="s"\ntype="source.file"\nparams={{path="{wav}"}}\n'
                       f'[[nodes]]\nid="f"\ntype="test.slow_flush"\nthread="{thread}"\n'
                       'in={audio="s.audio"}\n')
    st = Engine(spec, realtime=False).run()["nodes"]["f"]
    assert st["cpu_calls"] >= 50 and st["cpu_max_ms"] < 100, st
    assert st["flush_ms"] >= 150, st
    # nor in the run's speed: 0.5 s of audio streamed in real time is 1.0x, then a drain
    # (it read 0.8x, 0.5 s of audio in 0.65 s, as if the machine could not keep up)
    run = Engine(spec, realtime=True).run()
    assert run["drain_seconds"] >= 0.15 and 0.85 <= run["speed"] <= 1.15, run
