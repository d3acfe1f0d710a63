"""Bad input gets a clear one-paragraph error, exit status 2, and no traceback."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.errors import AudioFileError, GraphError
from engine.graph import load_graph, parse_graph
from engine.runtime import Engine

from .conftest import REPO, shared

CLI = [sys.executable, "-m", "engine.cli"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def assert_clean_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    out = r.stderr + r.stdout
    assert r.returncode == 2, out
    assert "Traceback" not in out, out
    low = out.lower()
    for n in needles:
        assert n.lower() in low, f"{n!r} not in: {out}"
    return out


PLAIN_GRAPH = """
schema_version = 1
[[nodes]]
id = "src"
type = "source.file"
params = {{ path = "{path}" }}
[[nodes]]
id = "g"
type = "dsp.gain"
in = {{ audio = "src.audio" }}
"""


@pytest.fixture
def good_wav(tmp_path) -> Path:
    p = tmp_path / "good.wav"
    sf.write(p, np.zeros((16000, 1), np.float32), 16000, subtype="PCM_16")
    return p


def _corrupt(tmp_path: Path, good_wav: Path, kind: str) -> Path:
    p = tmp_path / f"{kind}.wav"
    data = good_wav.read_bytes()
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "garbage":
        p.write_bytes(np.random.default_rng(1).integers(0, 255, 5000, np.uint8).tobytes())
    elif kind == "header_only":
        p.write_bytes(data[:44])
    elif kind == "text":
        p = tmp_path / "notes.flac"
        p.write_text("these are my meeting notes, not audio\n" * 50)
    elif kind == "missing":
        p = tmp_path / "does-not-exist.wav"
    return p


@pytest.mark.parametrize("kind,needle", [
    ("empty", "empty"), ("garbage", "not a readable audio file"),
    ("header_only", "no audio frames"), ("text", "not a readable audio file"),
    ("missing", "no such audio file"),
])
def test_bad_audio_file_cli(tmp_path, good_wav, kind, needle):
    bad = _corrupt(tmp_path, good_wav, kind)
    g = tmp_path / "g.toml"
    g.write_text(PLAIN_GRAPH.format(path=bad))
    r = run_cli("run", str(g), "--fast", "--quiet")
    out = assert_clean_error(r, needle)
    assert bad.name in out


@pytest.mark.parametrize("kind", ["empty", "garbage", "header_only", "text"])
def test_bad_audio_file_api(tmp_path, good_wav, kind):
    bad = _corrupt(tmp_path, good_wav, kind)
    with pytest.raises(AudioFileError, match=bad.name):
        Engine(parse_graph(PLAIN_GRAPH.format(path=bad)), realtime=False).run()


def test_wrong_format_input_file_via_cli_input(tmp_path, good_wav):
    bad = _corrupt(tmp_path, good_wav, "garbage")
    r = run_cli("run", str(REPO / "graphs" / "vad_monitor.toml"), "--input", str(bad),
                "--fast", "--quiet")
    assert_clean_error(r, bad.name)


def _cut(tmp_path: Path, kind: str, keep: float) -> Path:
    """jfk.flac cut off after ``keep`` of its bytes, as a crashed recorder leaves it: as FLAC,
    or as a 16-bit WAV whose header still announces the whole 11 s."""
    src = shared("speech/jfk.flac")
    if kind == "wav":
        x, rate = sf.read(src, dtype="float32")
        sf.write(tmp_path / "whole.wav", x, rate, subtype="PCM_16")
        src = tmp_path / "whole.wav"
    whole = src.read_bytes()
    cut = tmp_path / f"crashed.{kind}"
    cut.write_bytes(whole[:int(len(whole) * keep)])
    return cut


def _warnings(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("warning: ")]


@pytest.mark.parametrize("kind", ["wav", "flac"])
def test_truncated_recording_is_processed_up_to_where_it_stops(tmp_path, kind):
    """A recording cut off at 70 % (a recorder that crashed) gives one warning naming the file,
    the length its header announces and the length present, and the captions of the part that
    is there (it used to be refused whole: "the file is truncated" / "psf_fseek() failed")."""
    cut = _cut(tmp_path, kind, 0.7)
    r = run_cli("run", str(REPO / "graphs" / "live_captions.toml"), "--input", str(cut),
                "--fast", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    warned = _warnings(r.stderr)
    assert len(warned) == 1, r.stderr
    assert re.fullmatch(rf"warning: .*{cut.name}: truncated \(header announces 11\.0 s, "
                        r"(7\.\d\d) s present\); processing the \1 s that are there",
                        warned[0]), warned[0]
    said = re.sub(r"[^a-z ]", "", r.stdout.lower())
    assert "and so my fellow americans" in said and "ask not" in said, r.stdout
    assert "can do for your country" not in said, r.stdout  # the last words were cut off


def test_truncated_file_in_a_graph_plays_its_readable_part(tmp_path, caplog):
    """A graph's source.file on a cut-off FLAC: one warning on the logger ``engine`` and
    exactly the frames that are there, equal to the original's; `validate` passes it with the
    same warning."""
    cut = _cut(tmp_path, "flac", 0.5)
    graph = (f'[[nodes]]\nid = "src"\ntype = "source.file"\nparams = {{ path = "{cut}" }}\n'
             '[[nodes]]\nid = "out"\ntype = "sink.array"\nin = { audio = "src.audio" }\n')
    with caplog.at_level(logging.WARNING, logger="engine"):
        eng = Engine(parse_graph(graph), realtime=False)
        eng.run()
    warned = [rec.getMessage() for rec in caplog.records if rec.name.startswith("engine")]
    assert len(warned) == 1 and f"{cut.name}: truncated (header announces 11.0 s" in warned[0]
    got = eng.node("out").audio
    ref, _ = sf.read(shared("speech/jfk.flac"), dtype="float32")
    assert 0.4 * len(ref) < len(got) < 0.6 * len(ref)
    np.testing.assert_array_equal(got, ref[:len(got)])
    g = tmp_path / "g.toml"
    g.write_text(graph)
    r = run_cli("validate", str(g))
    assert r.returncode == 0 and "ok (2 nodes)" in r.stdout, r.stderr
    assert len(_warnings(r.stderr)) == 1 and cut.name in r.stderr, r.stderr


def test_truncated_file_with_nothing_readable_stays_an_error(tmp_path):
    """A FLAC cut inside its first audio frame has nothing to play: still refused, exit 2."""
    src = shared("speech/jfk.flac")
    cut = tmp_path / "nothing.flac"
    cut.write_bytes(src.read_bytes()[:9000])
    r = run_cli("run", str(REPO / "graphs" / "vad_monitor.toml"), "--input", str(cut),
                "--fast", "--quiet")
    assert_clean_error(r, "nothing.flac", "corrupt or truncated near its end", "re-export")
    assert not _warnings(r.stderr), r.stderr


def test_text_file_named_mp3_is_called_not_audio(tmp_path):
    """libsndfile's MP3 decoder said "File does not exist or is not a regular file" for a text
    file named .mp3, after its own "Note: Illegal Audio-MPEG-Header" lines on stderr."""
    bad = tmp_path / "x.mp3"
    bad.write_text("hello\n")
    r = run_cli("run", str(REPO / "graphs" / "vad_monitor.toml"), "--input", str(bad),
                "--fast", "--quiet")
    out = assert_clean_error(r, "x.mp3: not a readable audio file (format not recognised)")
    assert "regular file" not in out and "MPEG" not in out, out
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_decoder_noise_is_dropped_and_nothing_else(capfd):
    """While a file is opened fd 2 goes to a temporary file: the MP3 decoder's own lines are
    dropped, anything else written meanwhile (another thread's log) is passed on, and fd 2 is
    back afterwards, also when the opening raised."""
    from engine.audio_io import _decoder_quiet

    with pytest.raises(AudioFileError), _decoder_quiet():
        os.write(2, b"Note: Illegal Audio-MPEG-Header 0x00000000 at offset 2.\n")
        os.write(2, b"a log line from elsewhere\n")
        os.write(2, b"Warning: Xing stream size off by more than 1%\n")
        raise AudioFileError("x")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "a log line from elsewhere\nafter\n"


GRAPH_PROBLEMS = [
    ("unknown top key", 'schema_version = 1\nnmae = "x"\n[[nodes]]\nid="s"\ntype="source.file"\n'
     'params={path="a.wav"}\n', ["nmae: unknown top-level key (did you mean 'name'?)"]),
    ("unknown node key", '[[nodes]]\nid="s"\ntype="source.file"\nparms={path="a.wav"}\n',
     ["nodes[s].parms: unknown key (did you mean 'params'?)",
      "nodes[s].params.path: required parameter is missing"]),
    ("bad types", '[[nodes]]\nid="s"\ntype="source.file"\nparams={path=3, loop="yes"}\n',
     ["nodes[s].params.path: must be a string, got int 3",
      "nodes[s].params.loop: must be true or false"]),
    ("range", '[[nodes]]\nid="s"\ntype="source.file"\nparams={path="a.wav"}\n'
     '[[nodes]]\nid="g"\ntype="dsp.gain"\nin={audio="s.audio"}\nparams={db=-500}\n',
     ["nodes[g].params.db: must be >= -120, got -500"]),
    ("unknown type", '[[nodes]]\nid="s"\ntype="source.fil"\n',
     ["nodes[s].type: unknown node type 'source.fil' (did you mean 'source.file'?)"]),
    ("missing producer", '[[nodes]]\nid="s"\ntype="source.file"\nparams={path="a.wav"}\n'
     '[[nodes]]\nid="g"\ntype="dsp.gain"\nin={audio="mic.audio"}\n',
     ["nodes[g].in.audio: no node 'mic' produces 'mic.audio'"]),
    ("audio fed by events", '[[nodes]]\nid="s"\ntype="source.file"\nparams={path="a.wav"}\n'
     '[[nodes]]\nid="log"\ntype="sink.events"\nin={events="s.audio"}\n',
     ["nodes[log].in.events: events port fed by audio port 's.audio'"]),
    ("cycle", '[[nodes]]\nid="s"\ntype="source.file"\nparams={path="a.wav"}\n'
     '[[nodes]]\nid="a"\ntype="dsp.gain"\nin={audio="b.audio"}\n'
     '[[nodes]]\nid="b"\ntype="dsp.gain"\nin={audio="a.audio"}\n', ["cycle:", "a", "b"]),
    ("duplicate id", '[[nodes]]\nid="s"\ntype="source.file"\nparams={path="a.wav"}\n'
     '[[nodes]]\nid="s"\ntype="dsp.gain"\nin={audio="s.audio"}\n', ["duplicate id 's'"]),
    ("toml syntax", '[[nodes]\nid="s"\n', ["not valid TOML"]),
    ("id not a string", '[[nodes]]\nid=5\ntype="source.file"\nparams={path="a.wav"}\n',
     ["nodes[0].id: must be a string, got int 5"]),
    ("nodes not tables", 'nodes = "mic"\n', ["nodes: must be an array of tables"]),
    ("unknown engine key", '[engine]\nworker_threads = 3\n[[nodes]]\nid="s"\n'
     'type="source.file"\nparams={path="a.wav"}\n', ["engine.worker_threads: unknown key"]),
    ("range echoed as written", '[[nodes]]\nid="s"\ntype="source.file"\nparams={path="a.wav"}\n'
     '[[nodes]]\nid="v"\ntype="vad.webrtc"\nin={audio="s.audio"}\nparams={min_speech_ms=-250}\n',
     ["nodes[v].params.min_speech_ms: must be >= 0, got -250\n"]),
]


@pytest.mark.parametrize("name,text,needles", GRAPH_PROBLEMS, ids=[g[0] for g in GRAPH_PROBLEMS])
def test_graph_problems_listed_with_paths(tmp_path, name, text, needles):
    g = tmp_path / "bad.toml"
    g.write_text(text)
    r = run_cli("validate", str(g))
    out = assert_clean_error(r, *needles)
    assert str(g) in out


def test_every_problem_reported_at_once():
    text = ('nmae = "x"\n[[nodes]]\nid="s"\ntype="source.file"\nparams={path=3}\n'
            '[[nodes]]\nid="g"\ntype="dsp.gian"\nin={audio="s.audio"}\n'
            '[[nodes]]\nid="h"\ntype="dsp.gain"\nin={audio="zz.audio"}\nparams={db="loud"}\n')
    with pytest.raises(GraphError) as ei:
        parse_graph(text)
    assert len(ei.value.problems) == 5, ei.value.problems


def test_a_duplicate_id_is_one_problem_not_a_cascade():
    """Which of two nodes a reference to a duplicated id means is unknown: the duplicate is
    reported, not the wiring and cycle problems guessed from it ('cycle: s -> s')."""
    text = ('[[nodes]]\nid="s"\ntype="source.file"\nparams={path="a.wav"}\n'
            '[[nodes]]\nid="s"\ntype="dsp.gain"\nin={audio="s.audio"}\n'
            '[[nodes]]\nid="log"\ntype="sink.events"\nin={events="s.events"}\n')
    with pytest.raises(GraphError) as ei:
        parse_graph(text)
    assert ei.value.problems == ["nodes[s].id: duplicate id 's' (also nodes[0])"]


def test_rate_mismatch_names_the_fix(tmp_path):
    wav = tmp_path / "a44.wav"
    sf.write(wav, np.zeros((4410, 1), np.float32), 44100)
    g = tmp_path / "g.toml"
    g.write_text(f'[[nodes]]\nid="mic"\ntype="source.file"\nparams={{path="{wav}"}}\n'
                 '[[nodes]]\nid="vad"\ntype="vad.webrtc"\nin={audio="mic.audio"}\n')
    r = run_cli("validate", str(g))
    assert_clean_error(r, "nodes[vad]", "44100 Hz", "dsp.resample")


def test_branch_whose_output_reaches_nothing_is_warned(tmp_path):
    """A resampler -> gain chain that feeds nothing runs for nothing (usually a slip: the VAD
    wired to mic.audio instead of to16k.audio): validate and run say so, naming each node and
    why, but the graph is valid (exit 0). The shipped graphs have no such branch."""
    g = tmp_path / "g.toml"
    g.write_text('[[nodes]]\nid="mic"\ntype="source.microphone"\nparams={sample_rate=16000}\n'
                 '[[nodes]]\nid="to8k"\ntype="dsp.resample"\nin={audio="mic.audio"}\n'
                 'params={rate=8000}\n'
                 '[[nodes]]\nid="loud"\ntype="dsp.gain"\nin={audio="to8k.audio"}\n'
                 '[[nodes]]\nid="vad"\ntype="vad.webrtc"\nin={audio="mic.audio"}\n')
    r = run_cli("validate", str(g))
    assert r.returncode == 0 and "ok (4 nodes)" in r.stdout, r.stderr
    warned = [x for x in r.stderr.splitlines() if x.startswith("warning: ")]
    assert len(warned) == 2, r.stderr
    assert "nodes[to8k] (dsp.resample)" in warned[0] and "only loud takes it" in warned[0]
    assert "nodes[loud] (dsp.gain)" in warned[1] and "no node takes it" in warned[1]
    r = run_cli("run", str(g), "--input", str(shared("speech/jfk.flac")), "--fast", "--quiet")
    assert r.returncode == 0 and r.stderr.count("reaches no sink or event") == 2, r.stderr
    for shipped in sorted((REPO / "graphs").glob("*.toml")):
        assert load_graph(shipped).unused() == [], shipped


def test_unknown_device_name(pulse, tmp_path):
    r = run_cli("run", str(REPO / "graphs" / "vad_monitor.toml"), "--device",
                "NoSuchMicrophone", "--quiet")
    assert_clean_error(r, "no input device named 'NoSuchMicrophone'", "audio-engine devices")


def test_unknown_backend_rejected(tmp_path):
    g = tmp_path / "g.toml"
    g.write_text('[engine]\nbackend="portaudio"\n[[nodes]]\nid="mic"\n'
                 'type="source.microphone"\n')
    r = run_cli("validate", str(g))
    assert_clean_error(r, "engine.backend")


def test_cli_set_override_validated(tmp_path):
    r = run_cli("run", str(REPO / "graphs" / "vad_monitor.toml"), "--input",
                str(shared("speech/jfk.flac")), "--fast", "--quiet", "--set", "vad.threshold=7")
    assert_clean_error(r, "nodes[vad].params.threshold", "(from --set vad.threshold)")


def test_cli_set_on_an_unknown_node_is_an_error(tmp_path):
    """A mistyped node id in --set is reported (it used to be dropped silently)."""
    r = run_cli("run", str(REPO / "graphs" / "vad_monitor.toml"), "--input",
                str(shared("speech/jfk.flac")), "--fast", "--quiet", "--set", "vda.threshold=0.3")
    assert_clean_error(r, "--set vda.threshold: the graph has no node 'vda'",
                       "did you mean 'vad'")


def test_cli_stats_json_unwritable_fails_before_the_run(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = run_cli("run", str(REPO / "graphs" / "vad_monitor.toml"), "--input",
                str(shared("speech/jfk.flac")), "--fast", "--quiet", "--stats-json",
                str(blocker / "stats.json"))
    out = assert_clean_error(r, "--stats-json", "cannot write there")
    assert "vad.speech_started" not in out  # refused before any audio ran


@pytest.mark.parametrize("args,needles", [
    # the graph forgotten: an audio file where the graph goes
    (["run", "{jfk}"], ["is an audio file (FLAC", "audio-engine run GRAPH --input {jfk}"]),
    (["run", "{graphs}"], ["is a folder; give a graph file"]),
    (["validate", "{binary}"], ["is not a graph file (not UTF-8 text)"]),
    # flags that would be ignored are refused
    (["run", "{vad}", "--loop"], ["--loop needs --input FILE"]),
    (["run", "{vad}", "--input", "{jfk}", "--output-device", "nosuch"],
     ["--output-device", "plays nothing (it has no sink.speaker node)"]),
    # a file where the output folder should be: not mkdir's "File exists"
    (["run", "{vad}", "--input", "{jfk}", "--fast", "--set", "log.path='{blocker}/ev.jsonl'"],
     ["cannot open event log for writing", "{blocker} is a file, not a folder"]),
    # a node's own checks (validate_params) say the fix and where the value came from
    (["run", "{captions}", "--input", "{jfk}", "--fast", "--set", "asr.language=de"],
     ["is English-only, got language = 'de'", 'model = "whisper-base"',
      "(from --set asr.language)"]),
], ids=["audio-as-graph", "folder-as-graph", "binary-graph", "loop-without-input",
        "output-device-without-speaker", "file-in-place-of-folder", "language-of-an-en-model"])
def test_cli_mistakes_are_named(tmp_path, args, needles):
    binary = tmp_path / "g.toml"
    binary.write_bytes(bytes(range(256)) * 4)
    (tmp_path / "out").write_text("")
    names = {"jfk": str(shared("speech/jfk.flac")), "graphs": str(REPO / "graphs"),
             "binary": str(binary), "vad": str(REPO / "graphs" / "vad_monitor.toml"),
             "blocker": str(tmp_path / "out"),
             "captions": str(REPO / "graphs" / "live_captions.toml")}
    r = run_cli(*[a.format(**names) for a in args])
    assert_clean_error(r, *[n.format(**names) for n in needles])


@pytest.mark.parametrize("value", ["0", "-3", "nan", "soon"])
def test_cli_duration_must_be_positive(value):
    r = run_cli("run", str(REPO / "graphs" / "vad_monitor.toml"), "--input",
                str(shared("speech/jfk.flac")), "--fast", "--duration", value)
    assert r.returncode == 2 and "--duration" in r.stderr and "Traceback" not in r.stderr


def test_cli_duration_counts_seconds_of_audio(tmp_path):
    """--duration S with --fast processes S seconds of audio (to the 10 ms quantum), however
    fast the machine is, and drains the nodes (the open speech segment is closed)."""
    import json

    st = tmp_path / "stats.json"
    r = run_cli("run", str(REPO / "graphs" / "vad_monitor.toml"), "--input",
                str(shared("speech/jfk.flac")), "--fast", "--loop", "--duration", "25.5",
                "--stats-json", str(st))
    assert r.returncode == 0, r.stderr
    stats = json.loads(st.read_text())
    assert abs(stats["audio_seconds"] - 25.5) <= 0.011, stats["audio_seconds"]
    ev = stats["events"]
    assert ev["vad.speech_started"] == ev["vad.speech_stopped"] >= 8


def test_no_input_device_falls_back_to_the_bundled_sample(tmp_path):
    """With no audio input device at all, the main job says so in one line and streams the
    bundled speech sample through the same graph in real time."""
    import os

    env = {**os.environ, "PULSE_SERVER": "unix:/nonexistent"}  # PulseAudio unreachable
    probe = subprocess.run([sys.executable, "-c", "import sounddevice as sd; print(sum("
                            "d['max_input_channels'] > 0 for d in sd.query_devices()))"],
                           capture_output=True, text=True, env=env, timeout=60)
    if probe.stdout.strip() != "0":
        pytest.skip("this machine has input devices without PulseAudio (real sound hardware)")
    r = subprocess.run([*CLI, "run", str(REPO / "graphs" / "live_captions.toml"), "--duration",
                        "6", "--quiet"], capture_output=True, text=True, env=env, timeout=120,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "bundled speech sample" in ln]
    assert len(lines) == 1 and "no audio input device" in lines[0]
    assert "fellow americans" in r.stdout.lower(), r.stdout


def test_embedding_overrides_and_input_mistakes_are_explained():
    """Engine.from_file(params=...) is checked like --set, and its messages name params=."""
    graph = REPO / "graphs" / "live_captions.toml"
    cases = [({"asr.step_ms": 400}, "params['asr.step_ms']: must be a dict of parameters, "
                                     "e.g. {'asr': {'step_ms': 400}}"),
             ({"asrx": {"step_ms": 400}}, "params['asrx']['step_ms']: the graph has no node "
                                          "'asrx' (did you mean 'asr'?)"),
             ({"asr": {"stepms": 400}}, "(from params['asr']['stepms'])")]
    for params, needle in cases:
        with pytest.raises(GraphError) as ei:
            Engine.from_file(graph, params=params)
        assert needle in str(ei.value), str(ei.value)
    from engine.errors import EngineError

    with pytest.raises(EngineError, match=r"input='feeds': no such audio file \(did you mean "
                                          r"'feed'\?\)"):
        Engine.from_file(graph, input="feeds")


def _recording_graph(src: Path, *sinks: tuple[str, str], gain_db: float = 0.0) -> str:
    g = (f'[[nodes]]\nid = "src"\ntype = "source.file"\nparams = {{ path = "{src}" }}\n'
         f'[[nodes]]\nid = "g"\ntype = "dsp.gain"\nin = {{ audio = "src.audio" }}\n'
         f'params = {{ db = {gain_db} }}\n')
    for i, (path, subtype) in enumerate(sinks):
        g += (f'[[nodes]]\nid = "rec{i}"\ntype = "sink.wav"\nin = {{ audio = "g.audio" }}\n'
              f'params = {{ path = "{path}", subtype = "{subtype}" }}\n')
    return g


def test_a_run_that_fails_to_start_keeps_the_last_recording(tmp_path, good_wav):
    """Bad input loses nothing: a run whose start-up fails (here a second recording in a
    folder it cannot write) must not empty the first recording of the last run."""
    keep = tmp_path / "keep.wav"
    Engine(parse_graph(_recording_graph(good_wav, (keep, "PCM_16"))), realtime=False).run()
    before = keep.read_bytes()
    assert sf.info(keep).frames == 16000
    spec = parse_graph(_recording_graph(good_wav, (keep, "PCM_16"),
                                        ("/proc/no/such/dir/x.wav", "PCM_16")))
    with pytest.raises(AudioFileError, match="cannot create recording"):
        Engine(spec, realtime=False).run()
    assert keep.read_bytes() == before


def test_recordings_take_the_extensions_format_and_count_clipping(tmp_path):
    """.ogg / .mp3 recordings get the format's own coding (they failed at run time with
    'Invalid combination of format, subtype and endian'); an unknown extension is refused when
    the graph loads; samples an integer format clips are counted."""
    src = tmp_path / "loud.wav"
    t = np.arange(16000) / 16000
    sf.write(src, (0.9 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None], 16000,
             subtype="FLOAT")
    ogg, pcm, flt = tmp_path / "a.ogg", tmp_path / "b.wav", tmp_path / "c.wav"
    eng = Engine(parse_graph(_recording_graph(src, (ogg, "FLOAT"), (pcm, "PCM_16"),
                                              (flt, "FLOAT"), gain_db=6.0)), realtime=False)
    st = eng.run()
    assert sf.info(ogg).format == "OGG" and sf.info(ogg).frames == 16000
    assert st["nodes"]["rec1"]["clipped_samples"] > 1000  # 0.9 * 2 = 1.8 peaks
    assert st["nodes"]["rec2"]["clipped_samples"] == 0  # float keeps them
    with pytest.raises(GraphError, match=r"rec0\].params.path: cannot tell the file format"):
        parse_graph(_recording_graph(src, (tmp_path / "x.xyz", "FLOAT")))


def test_spatializer_taps_too_short_is_refused_when_the_graph_loads():
    graph = ('[[nodes]]\nid = "src"\ntype = "source.file"\nparams = { path = "x.wav" }\n'
             '[[nodes]]\nid = "sp"\ntype = "spatial.hrtf"\nin = { audio = "src.audio" }\n'
             'params = { taps = 8 }\n')
    with pytest.raises(GraphError, match="taps: must be 0 .auto. or 16..1024, got 8"):
        parse_graph(graph)


def test_cli_lists_node_types_and_their_parameters():
    r = run_cli("nodes")
    assert r.returncode == 0 and "sink.segments" in r.stdout and "vad.silero" in r.stdout
    r = run_cli("nodes", "dsp.gain")
    assert r.returncode == 0, r.stderr
    assert "ramp_ms (float) = 10.0  [>= 0; <= 10000]" in r.stdout
    assert "inputs:  audio (audio)" in r.stdout
    r = run_cli("nodes", "vad.silro")
    assert_clean_error(r, "unknown node type 'vad.silro'", "did you mean 'vad.silero'")
    plugin = REPO / "tests" / "data" / "plugin_meter.py"
    r = run_cli("nodes", "test.meter", "--plugin", str(plugin))
    assert r.returncode == 0 and "every_s" in r.stdout, r.stderr
