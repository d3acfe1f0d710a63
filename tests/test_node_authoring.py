"""Writing your own node types: what a plugin author is told when a node is wrong (tracebacks,
plugin imports, forgotten io.produced, bad negotiate results and params, unknown ports and
types), and the test helpers ``make_node`` / ``run_node``."""

from __future__ import annotations

import inspect
import logging
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import soundfile as sf

from engine.cli import main
from engine.errors import EngineError, GraphError, PortError
from engine.events import Event
from engine.graph import parse_graph
from engine.node import AUDIO, EVENTS, Node, NodeIO, load_plugin, register
from engine.nodes.gain import Gain
from engine.runtime import Engine
from engine.testing import make_node, run_node

from .conftest import REPO

SR = 16000


class _Pass(Gain):
    """Passes its audio through (a gain of 0 dB): the base of the nodes below."""

    type_name = "authoring.pass"


@register
class _Raises(_Pass):
    type_name = "authoring.raises"

    def process(self, io: NodeIO) -> None:
        raise ValueError(f"boom at {io.start['audio']}")


@register
class _Forgetful(_Pass):
    """Writes its output and forgets io.produced."""

    type_name = "authoring.forgetful"

    def process(self, io: NodeIO) -> None:
        x = io.audio("audio")
        io.out("audio")[: len(x)] = x


@register
class _EmitsOnTypo(_Pass):
    type_name = "authoring.emits_on_typo"
    outputs = {"audio": AUDIO, "events": EVENTS}

    def process(self, io: NodeIO) -> None:
        io.emit("evts", Event(io.start["audio"], SR, self.id))


@register
class _RenamedOutput(_Pass):
    """Declares output 'out' and negotiates 'audio'."""

    type_name = "authoring.renamed_output"
    outputs = {"out": AUDIO}


class _SpecNotDict(_Pass):
    def negotiate(self, inputs):
        return inputs["audio"]


def _graph(tmp_path, node_type: str, seconds: float = 1.0, port: str = "audio"):
    return parse_graph(_graph_text(tmp_path, node_type, seconds, port))


def _graph_text(tmp_path, node_type: str, seconds: float = 1.0, port: str = "audio") -> str:
    """A file source of ``seconds`` of a constant, node ``b`` of ``node_type``, a sink.array
    taking ``b.port``."""
    wav = tmp_path / "in.wav"
    sf.write(wav, np.full(int(SR * seconds), 0.1, np.float32), SR)
    return f"""
[[nodes]]
id = "src"
type = "source.file"
params = {{ path = "{wav}" }}
[[nodes]]
id = "b"
type = "{node_type}"
in = {{ audio = "src.audio" }}
[[nodes]]
id = "out"
type = "sink.array"
in = {{ audio = "b.{port}" }}
"""


def _tone(seconds: float = 0.5) -> np.ndarray:
    return np.full(int(SR * seconds), 0.1, np.float32)


# ------------------------------------------------------------------ 1. tracebacks


def test_first_error_of_a_node_is_logged_with_its_traceback(tmp_path, caplog):
    eng = Engine(_graph(tmp_path, "authoring.raises"), realtime=False)
    errors: list[Event] = []
    eng.on("engine.node_error", errors.append)
    with caplog.at_level(logging.WARNING, logger="engine"):
        eng.run()
    assert len(errors) >= 3  # the events as before
    firsts = [r for r in caplog.records if "first error" in r.getMessage()]
    assert len(firsts) == 1, caplog.text  # once per node, not per error
    rec = firsts[0]
    assert rec.getMessage().startswith("nodes[b] (authoring.raises): first error, traceback")
    assert rec.exc_info and rec.exc_info[0] is ValueError
    assert 'raise ValueError(f"boom at' in caplog.text  # the failing line


def test_cli_prints_the_traceback_of_a_plugins_first_error(tmp_path):
    """This test module is the plugin (a module name on sys.path): its authoring.raises."""
    g = tmp_path / "g.toml"
    g.write_text(_graph_text(tmp_path, "authoring.raises", 0.5))
    r = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(g), "--plugin",
                        "tests.test_node_authoring", "--fast"], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 3, r.stderr  # finished with node errors
    assert "warning: nodes[b] (authoring.raises): first error, traceback follows" in r.stderr
    assert "Traceback (most recent call last)" in r.stderr
    assert 'raise ValueError(f"boom at {io.start[\'audio\']}")' in r.stderr, r.stderr
    assert r.stderr.count("Traceback") == 1
    assert "produced none" not in r.stderr  # its errors say enough


# ------------------------------------------------------------------ 2. plugin imports


def test_plugin_whose_own_import_fails_is_not_called_missing(tmp_path, monkeypatch):
    (tmp_path / "imp.py").write_text("import nonexistent_pkg_xyz  # noqa\n")
    want = "importing it raised ModuleNotFoundError: No module named 'nonexistent_pkg_xyz'"
    for spec in (str(tmp_path / "imp.py"), "imp"):  # a file, and a module on sys.path
        monkeypatch.syspath_prepend(str(tmp_path))
        with pytest.raises(EngineError) as ei:
            load_plugin(spec)
        assert want in str(ei.value) and "give a module on sys.path" not in str(ei.value)
    for spec in ("no_such_module_xyz", "no_such_module_xyz.nodes"):  # itself missing: the hint
        with pytest.raises(EngineError, match="give a module on sys.path or a .py file"):
            load_plugin(spec)


# ------------------------------------------------------------------ 3. forgotten io.produced


def test_node_that_never_reports_produced_audio_is_warned_about(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="engine"):
        Engine(_graph(tmp_path, "authoring.forgetful", 2.0), realtime=False).run()
    msgs = [r.getMessage() for r in caplog.records if "produced none" in r.getMessage()]
    assert msgs == ["nodes[b] (authoring.forgetful): took 2.0 s of audio and produced none on "
                    "b.audio: does process() call io.produced('audio', n)?"], caplog.text
    with pytest.warns(UserWarning, match=re.escape("produced none on n.audio")):
        run_node(_Forgetful("n", _Forgetful.Params()), _tone(), SR, 160)


def test_a_node_that_produces_gets_no_such_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="engine"):
        Engine(_graph(tmp_path, "authoring.emits_on_typo"), realtime=False).run()
    assert "produced none" not in caplog.text  # (it fails, but not by forgetting)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_node(_Pass("n", _Pass.Params()), _tone(), SR, 160)


# ------------------------------------------------------------------ 4. run_node's checks


def test_run_node_checks_negotiate_as_loading_a_graph_does(tmp_path):
    with pytest.raises(EngineError, match=re.escape(
            "nodes[n] (authoring.pass): negotiate() must return a dict of output port -> "
            "AudioSpec, got AudioSpec(")):
        run_node(_SpecNotDict("n", _Pass.Params()), _tone(), SR, 160)
    renamed = ("negotiate() gave a format for 'audio', which is not one of its audio outputs "
               "(its audio outputs: out; declare it in outputs = {...})")
    with pytest.raises(EngineError, match=re.escape(f"nodes[n] (authoring.renamed_output): "
                                                    f"{renamed}")):
        run_node(_RenamedOutput("n", _Pass.Params()), _tone(), SR, 160)
    with pytest.raises(GraphError, match=re.escape(renamed)):  # the same words
        Engine(_graph(tmp_path, "authoring.renamed_output", port="out"), realtime=False)


def test_make_node_checks_params_as_a_graph_file_does():
    g = make_node("dsp.gain", id="g", db=6)
    assert isinstance(g, Gain) and g.id == "g" and g.params.db == 6.0
    assert make_node(Gain, db=-3).params.db == -3.0
    for kw, needle in (({"db": 500}, "nodes[g].params.db: must be <= 60, got 500"),
                       ({"dbb": 1}, "nodes[g].params.dbb: unknown parameter (did you mean "
                                    "'db'?)"),
                       ({"db": "6"}, "nodes[g].params.db: must be a number, got str '6'")):
        with pytest.raises(GraphError, match=re.escape(needle)):
            make_node("dsp.gain", id="g", **kw)
    with pytest.raises(GraphError, match="unknown node type 'dsp.gian'"):
        make_node("dsp.gian")


def test_run_node_refuses_params_a_graph_file_would_refuse():
    with pytest.raises(TypeError, match=re.escape("g: params is a dict, not Gain.Params: build "
                                                  "the node with engine.testing.make_node(")):
        run_node(Gain("g", {"db": 6}), _tone(), SR, 160)
    with pytest.raises(GraphError, match=re.escape("nodes[g].params.db: must be <= 60, got 500")):
        run_node(Gain("g", Gain.Params(db=500)), _tone(), SR, 160)


def test_readme_shows_run_node_and_make_node_as_they_are():
    text = (REPO / "README.md").read_text()
    names = set(inspect.signature(run_node).parameters)
    for call in re.findall(r"run_node\(([^)]*)\)", text):
        for arg in (a.strip().split("=")[0] for a in call.split(",")):
            assert arg in names, f"README: run_node({call}): no parameter {arg!r}"
    assert "make_node(" in text


# ------------------------------------------------------------------ 5. reset()


def test_reset_is_documented_as_never_called_by_the_engine():
    doc = inspect.getdoc(Node.reset) or ""
    assert "never calls it" in doc and "prepare" in doc
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "`reset()` is never called by the engine" in readme


# ------------------------------------------------------------------ 6. unknown ports


def test_unknown_port_names_the_nodes_ports(tmp_path):
    with pytest.raises(PortError) as ei:
        run_node(_EmitsOnTypo("b", _Pass.Params()), _tone(), SR, 160)
    assert str(ei.value) == "b: no event output 'evts' (did you mean 'events'?) (its event " \
                            "outputs: events)"
    assert isinstance(ei.value, KeyError)  # still one, for code that catches it
    io = NodeIO("b", {"audio": np.zeros((4, 1), np.float32)}, ["events"])
    for call, needle in ((lambda: io.out("x"), "b: no audio output 'x' (its audio outputs: "
                                               "audio)"),
                         (lambda: io.produced("x", 1), "b: no audio output 'x'"),
                         (lambda: io.audio("x"), "b: no audio input 'x' connected")):
        with pytest.raises(PortError, match=re.escape(needle)):
            call()
    eng = Engine(_graph(tmp_path, "authoring.emits_on_typo"), realtime=False)
    errors: list[Event] = []
    eng.on("engine.node_error", errors.append)
    eng.run()
    assert "b: no event output 'evts'" in errors[0].message, errors[0].message


# ------------------------------------------------------------------ 7. unknown types


def test_unknown_type_from_another_prefix_suggests_plugin_not_a_far_fetched_type(capsys):
    base = '[[nodes]]\nid="s"\ntype="source.file"\nparams={path="x.wav"}\n' \
           '[[nodes]]\nid="p"\ntype="TYPE"\nin={audio="s.audio"}\n'
    with pytest.raises(GraphError) as ei:
        parse_graph(base.replace("TYPE", "my.peak"))
    msg = str(ei.value)
    assert "nodes[p].type: unknown node type 'my.peak' (a type from your own module? load it " \
           "with --plugin FILE.py" in msg
    assert "did you mean" not in msg
    with pytest.raises(GraphError, match=re.escape("unknown node type 'sink.speeker' (did you "
                                                   "mean 'sink.speaker'?)")):
        parse_graph(base.replace("TYPE", "sink.speeker"))
    assert main(["nodes", "my.peak"]) == 2  # the same for `audio-engine nodes TYPE`
    assert "unknown node type 'my.peak' (a type from your own module?" in capsys.readouterr().err

