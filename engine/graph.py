"""Graph files: TOML under ``graphs/``, validated in stages before anything runs.

.. code-block:: toml

    schema_version = 1
    name = "live-captions"
    [engine]                      # optional
    quantum_ms = 10
    [[nodes]]
    id = "mic"
    type = "source.microphone"
    params = { sample_rate = 48000 }
    [[nodes]]
    id = "vad"
    type = "vad.silero"
    in = { audio = "to16k.audio" }

Validation follows MediaPipe's staging and never stops at the first problem: every problem is
collected with its path (``nodes[asr].params.window_s: must be > 0, got -1``) and reported in one
:class:`~engine.errors.GraphError`:

1. TOML syntax; unknown top-level / node keys;
2. node ids (missing, duplicate), node types (unknown, with a did-you-mean);
3. parameters: unknown names, types, ranges and choices, node-specific checks (model files);
4. wiring: unknown ports, missing producers, audio port fed by an events port, cycles;
5. format negotiation (sample rates, channels), done by :func:`engine.runtime.compile_graph`.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GraphError
from .node import AUDIO, Node, did_you_mean, node_types, range_violation

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

TOP_KEYS = {"schema_version", "name", "description", "engine", "nodes"}
NODE_KEYS = {"id", "type", "in", "params", "thread", "queue_size", "queue_policy", "description"}
ENGINE_KEYS = {"quantum_ms", "backend"}
QUEUE_POLICIES = ("drop_oldest", "drop_newest", "block")


@dataclass(frozen=True)
class EngineSettings:
    quantum_ms: float = 10.0
    backend: str = "sounddevice"


@dataclass(frozen=True)
class NodeDecl:
    """One validated node declaration."""

    id: str
    type: str
    cls: type[Node]
    params: Any
    #: input port -> list of (producer id, producer port)
    inputs: dict[str, tuple[tuple[str, str], ...]]
    thread: str
    queue_size: int
    queue_policy: str


@dataclass(frozen=True)
class GraphSpec:
    name: str
    source: str
    nodes: tuple[NodeDecl, ...]
    settings: EngineSettings = field(default_factory=EngineSettings)
    description: str = ""

    def node(self, node_id: str) -> NodeDecl:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def order(self) -> list[NodeDecl]:
        """Nodes in topological order (producers before consumers)."""
        return topo_order(self.nodes)

    def takers(self) -> dict[str, list[str]]:
        """Node id -> the ids of the nodes that take one of its outputs, in graph order."""
        users: dict[str, list[str]] = {n.id: [] for n in self.nodes}
        for n in self.nodes:
            for refs in n.inputs.values():
                for pid, _ in refs:
                    if pid in users and n.id not in users[pid]:
                        users[pid].append(n.id)
        return users

    def unused(self) -> list[str]:
        """Warnings for nodes whose work reaches nothing: a node counts when it is a sink (no
        outputs but a ``status`` port's device notices), has an events output (events reach
        the engine's subscribers), or feeds a node that counts. A resampler whose
        audio nobody takes runs for nothing, usually a wiring slip (``in = { audio =
        "mic.audio" }`` where ``"to16k.audio"`` was meant)."""
        users = self.takers()
        useful: set[str] = set()
        for n in reversed(self.order()):
            outs = {p: k for p, k in n.cls.outputs.items() if p != "status"}
            if (not outs or any(k != AUDIO for k in outs.values())
                    or any(u in useful for u in users[n.id])):
                useful.add(n.id)
        out = []
        for n in self.nodes:
            if n.id in useful:
                continue
            ports = ", ".join(f"{n.id}.{p}" for p, k in n.cls.outputs.items() if k == AUDIO)
            one = len(users[n.id]) == 1
            why = (f"only {', '.join(users[n.id])} take{'s' if one else ''} it, and "
                   f"{'its' if one else 'their'} output reaches nothing either" if users[n.id]
                   else "no node takes it")
            out.append(f"nodes[{n.id}] ({n.type}): its output reaches no sink or event ({ports}: "
                       f"{why}); connect it or remove the node")
        return out


def topo_order(nodes) -> list[NodeDecl]:
    by_id = {n.id: n for n in nodes}
    done: set[str] = set()
    out: list[NodeDecl] = []

    def visit(n: NodeDecl, stack: tuple[str, ...]) -> None:
        if n.id in done or n.id in stack:
            return
        for refs in n.inputs.values():
            for pid, _ in refs:
                if pid in by_id:
                    visit(by_id[pid], stack + (n.id,))
        done.add(n.id)
        out.append(n)

    for n in nodes:
        visit(n, ())
    return out


def load_graph(path: str | Path, overrides: dict[str, dict[str, Any]] | None = None,
               origin: str = "params") -> GraphSpec:
    """Read and validate a graph file (stages 1-4). Raises GraphError listing every problem.

    ``overrides`` (``{"asr": {"step_ms": 400}}``) replace parameters of the file's nodes; their
    problems are reported as coming from ``origin`` (``params`` for :meth:`Engine.from_file`,
    ``--set`` for the command line)."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise GraphError(str(p), [f"file not found: {p}"]) from None
    except UnicodeDecodeError:
        raise GraphError(str(p), [_not_text(p)]) from None
    except IsADirectoryError:
        raise GraphError(str(p), [f"{p} is a folder; give a graph file (e.g. "
                                  "graphs/live_captions.toml)"]) from None
    except OSError as e:
        raise GraphError(str(p), [f"cannot read {p}: {e.strerror or e}"]) from None
    return parse_graph(text, str(p), overrides, origin)


def _not_text(p: Path) -> str:
    """What to say when the graph file is not text: usually an audio file given in its place
    (``audio-engine run speech.wav``)."""
    import soundfile as sf

    try:
        info = sf.info(str(p))
    except Exception:  # noqa: BLE001 - not audio either
        return f"{p} is not a graph file (not UTF-8 text); graph files are TOML, see graphs/"
    return (f"{p} is an audio file ({info.format}, {info.samplerate} Hz), not a graph file: "
            f"to run a graph on it, audio-engine run GRAPH --input {p} (e.g. "
            "graphs/live_captions.toml)")


def parse_graph(text: str, source: str = "<graph>",
                overrides: dict[str, dict[str, Any]] | None = None,
                origin: str = "params") -> GraphSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise GraphError(source, [f"not valid TOML: {e}"]) from None
    return validate_graph(data, source, overrides, origin)


def validate_graph(data: dict, source: str = "<graph>",
                   overrides: dict[str, dict[str, Any]] | None = None,
                   origin: str = "params") -> GraphSpec:
    problems: list[str] = []
    for k in data:
        if k not in TOP_KEYS:
            problems.append(f"{k}: unknown top-level key{did_you_mean(k, TOP_KEYS)}")
    ver = data.get("schema_version", 1)
    if ver != 1:
        problems.append(f"schema_version: must be 1, got {ver!r}")
    settings = _engine_settings(data.get("engine", {}), problems)
    raw_nodes = data.get("nodes")
    if raw_nodes is not None and not isinstance(raw_nodes, list):
        problems.append(f"nodes: must be an array of tables ([[nodes]] sections), got "
                        f"{type(raw_nodes).__name__} {raw_nodes!r}")
        raise GraphError(source, problems)
    if not raw_nodes:
        problems.append("nodes: a graph needs at least one [[nodes]] table")
        raise GraphError(source, problems)

    registry = node_types()
    decls: list[tuple[str, dict, type[Node] | None]] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_nodes):
        if not isinstance(raw, dict):
            problems.append(f"nodes[{i}]: must be a table, got {type(raw).__name__}")
            continue
        nid = raw.get("id")
        label = f"nodes[{nid}]" if isinstance(nid, str) and nid else f"nodes[{i}]"
        if nid is not None and not isinstance(nid, str):
            problems.append(f"{label}.id: must be a string, got {type(nid).__name__} {nid!r} "
                            f"(write id = \"{nid}\")")
            nid = str(nid)
        elif not nid:
            problems.append(f"{label}.id: missing (every node needs a unique string id)")
            nid = f"#{i}"
        elif not nid.replace("_", "").replace("-", "").isalnum():
            problems.append(f"{label}.id: '{nid}' must use letters, digits, '_' or '-' only")
        if nid in seen:
            problems.append(f"{label}.id: duplicate id '{nid}' (also nodes[{seen[nid]}])")
        seen[nid] = i
        for k in raw:
            if k not in NODE_KEYS:
                problems.append(f"{label}.{k}: unknown key{did_you_mean(k, NODE_KEYS)}")
        t = raw.get("type")
        cls = None
        if not isinstance(t, str):
            problems.append(f"{label}.type: missing (e.g. type = \"vad.silero\")")
        elif t not in registry:
            problems.append(f"{label}.type: {unknown_type(t, registry)}")
        else:
            cls = registry[t]
        decls.append((nid, raw, cls))

    overrides = _check_overrides(overrides, seen, origin, problems)

    nodes: list[NodeDecl] = []
    for nid, raw, cls in decls:
        label = f"nodes[{nid}]"
        params_raw = raw.get("params", {})
        if nid in overrides and isinstance(params_raw, dict):
            params_raw = {**params_raw, **overrides[nid]}
        params = None
        if cls is not None:
            if not isinstance(params_raw, dict):
                problems.append(f"{label}.params: must be a table")
            else:
                found: list[str] = []
                params = node_params(cls, params_raw, label, found)
                problems.extend(_mark_overridden(found, nid, overrides.get(nid, {}), origin))
        inputs = _inputs(raw.get("in", {}), label, cls, problems)
        thread = raw.get("thread", cls.thread if cls else "dsp")
        if thread not in ("dsp", "worker"):
            problems.append(f"{label}.thread: must be 'dsp' or 'worker', got {thread!r}")
        qs = raw.get("queue_size", cls.queue_size if cls else 1000)
        if not isinstance(qs, int) or isinstance(qs, bool) or qs <= 0:
            problems.append(f"{label}.queue_size: must be an integer > 0, got {qs!r}")
        qp = raw.get("queue_policy", cls.queue_policy if cls else "drop_oldest")
        if qp not in QUEUE_POLICIES:
            problems.append(f"{label}.queue_policy: must be one of {', '.join(QUEUE_POLICIES)}, "
                            f"got {qp!r}")
        if cls is not None:
            nodes.append(NodeDecl(nid, cls.type_name, cls, params, inputs, thread, qs, qp))

    _check_wiring(nodes, seen, problems)
    if problems:
        raise GraphError(source, problems)
    return GraphSpec(name=str(data.get("name", Path(source).stem)), source=source,
                     nodes=tuple(nodes), settings=settings,
                     description=str(data.get("description", "")))


def unknown_type(t: str, registry: dict[str, type[Node]]) -> str:
    """``unknown node type 'x.y'`` with a did-you-mean for a near miss of a known type
    ('source.fil'), or, when its prefix is none of the known types' ('my.peak'), the hint
    that a type from the user's own module must be loaded (a did-you-mean would be
    far-fetched there)."""
    prefix, dot, _ = t.partition(".")
    if dot and prefix not in {k.partition(".")[0] for k in registry}:
        return (f"unknown node type '{t}' (a type from your own module? load it with --plugin "
                "FILE.py; from Python, import the module first)")
    return f"unknown node type '{t}'{did_you_mean(t, registry)}"


def _override_name(origin: str, nid: str, name: str) -> str:
    return f"--set {nid}.{name}" if origin == "--set" else f"{origin}['{nid}']['{name}']"


def _check_overrides(overrides: Any, seen: dict[str, int], origin: str,
                     problems: list[str]) -> dict[str, dict[str, Any]]:
    """The usable part of ``overrides``; a problem for each entry that names no node of the
    graph or is not shaped ``{node: {param: value}}``."""
    if not overrides:
        return {}
    if not isinstance(overrides, dict):
        problems.append(f"{origin}: must be a dict {{node id: {{parameter: value}}}}, got "
                        f"{type(overrides).__name__}")
        return {}
    good = {}
    for nid, values in overrides.items():
        if not isinstance(values, dict):
            node, dot, name = str(nid).partition(".")
            example = {node: {name: values}} if dot else {nid: {"threshold": 0.6}}
            problems.append(f"{origin}['{nid}']: must be a dict of parameters, e.g. "
                            f"{example!r}, got {values!r}")
        elif nid not in seen:
            for name in values:
                problems.append(f"{_override_name(origin, nid, name)}: the graph has no node "
                                f"'{nid}'{did_you_mean(nid, seen)} (its nodes: "
                                f"{', '.join(seen)})")
        else:
            good[nid] = values
    return good


def _mark_overridden(found: list[str], nid: str, values: dict[str, Any],
                     origin: str) -> list[str]:
    """Say which problems come from an override (``--set``, ``params=``), not from the file."""
    out = []
    for msg in found:
        name = msg[len(f"nodes[{nid}].params."):].split(":", 1)[0]
        out.append(f"{msg} (from {_override_name(origin, nid, name)})" if name in values
                   else msg)
    return out


def _engine_settings(raw: Any, problems: list[str]) -> EngineSettings:
    if not isinstance(raw, dict):
        problems.append("engine: must be a table")
        return EngineSettings()
    for k in raw:
        if k not in ENGINE_KEYS:
            problems.append(f"engine.{k}: unknown key{did_you_mean(k, ENGINE_KEYS)}")
    q = raw.get("quantum_ms", 10.0)
    if not isinstance(q, (int, float)) or isinstance(q, bool) or not (1 <= q <= 100):
        problems.append(f"engine.quantum_ms: must be a number in 1..100, got {q!r}")
        q = 10.0
    b = raw.get("backend", "sounddevice")
    if b not in ("sounddevice", "pyaudio"):
        problems.append(f"engine.backend: must be 'sounddevice' or 'pyaudio', got {b!r}"
                        f"{did_you_mean(str(b), ('sounddevice', 'pyaudio'))}")
        b = "sounddevice"
    return EngineSettings(quantum_ms=float(q), backend=b)


def _inputs(raw: Any, label: str, cls: type[Node] | None, problems: list[str]):
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    if not isinstance(raw, dict):
        problems.append(f"{label}.in: must be a table like {{ audio = \"mic.audio\" }}")
        return out
    for port, ref in raw.items():
        if cls is not None and port not in cls.inputs:
            ports = ", ".join(cls.inputs) or "none"
            problems.append(f"{label}.in.{port}: {cls.type_name} has no input port '{port}'"
                            f"{did_you_mean(port, cls.inputs)} (its inputs: {ports})")
            continue
        refs = ref if isinstance(ref, list) else [ref]
        parsed = []
        for r in refs:
            if not isinstance(r, str) or r.count(".") != 1 or not all(r.split(".")):
                problems.append(f"{label}.in.{port}: expected \"node_id.port\", got {r!r}")
                continue
            parsed.append(tuple(r.split(".")))
        if cls is not None and cls.inputs.get(port) == AUDIO and len(parsed) > 1:
            problems.append(f"{label}.in.{port}: an audio port takes one producer, got "
                            f"{len(parsed)} (use a dsp.merge node to combine streams)")
        out[port] = tuple(parsed)  # type: ignore[arg-type]
    if cls is not None:
        for port in cls.inputs:
            if port not in out and port not in cls.optional_inputs:
                problems.append(f"{label}.in.{port}: required input is not connected")
    return out


def _check_wiring(nodes: list[NodeDecl], ids: dict[str, int], problems: list[str]) -> None:
    by_id = {n.id: n for n in nodes}
    dup = {nid for nid, k in Counter(n.id for n in nodes).items() if k > 1}
    for n in nodes:
        for port, refs in n.inputs.items():
            for pid, pport in refs:
                where = f"nodes[{n.id}].in.{port}"
                if pid not in ids:
                    problems.append(f"{where}: no node '{pid}' produces '{pid}.{pport}'"
                                    f"{did_you_mean(pid, ids)}")
                    continue
                prod = by_id.get(pid)
                if prod is None or pid in dup:
                    continue  # its own problem was reported already (which one is meant?)
                if pport not in prod.cls.outputs:
                    problems.append(f"{where}: node '{pid}' ({prod.type}) has no output "
                                    f"'{pport}'{did_you_mean(pport, prod.cls.outputs)} "
                                    f"(its outputs: {', '.join(prod.cls.outputs) or 'none'})")
                    continue
                want, got = n.cls.inputs[port], prod.cls.outputs[pport]
                if want != got:
                    problems.append(f"{where}: {want} port fed by {got} port '{pid}.{pport}'")
                if got == AUDIO and prod.thread == "worker":
                    problems.append(f"{where}: '{pid}' runs on a worker thread and cannot feed "
                                    "audio downstream; run it with thread = \"dsp\"")
    # cycles
    state: dict[str, int] = {}

    def dfs(nid: str, path: list[str]) -> None:
        state[nid] = 1
        for refs in by_id[nid].inputs.values():
            for pid, _ in refs:
                if pid not in by_id:
                    continue
                if state.get(pid) == 1:
                    cyc = path[path.index(pid):] + [pid] if pid in path else [nid, pid]
                    problems.append("cycle: " + " -> ".join(reversed(cyc)) +
                                    " (graphs must be acyclic)")
                elif pid not in state:
                    dfs(pid, path + [pid])
        state[nid] = 2

    # (with a duplicate id, reported already, which node a reference means is unknown)
    for nid in by_id if not dup else ():
        if nid not in state:
            dfs(nid, [nid])
    if len(nodes) == len(ids) and not any(n.cls.is_source for n in nodes):
        problems.append("nodes: the graph has no source node (e.g. source.microphone or "
                        "source.file)")


# ---------------------------------------------------------------------------------------------
# typed parameters


def node_params(cls: type[Node], raw: dict[str, Any], label: str, problems: list[str]):
    """A node's parameters from ``raw``, checked as a graph file's are: names, types, ranges
    (:func:`build_params`), then the node's own ``validate_params`` (model files, ...); each
    problem is added with its path under ``label`` (``nodes[asr]``). None if any."""
    params = build_params(cls, raw, f"{label}.params", problems)
    if params is not None and hasattr(cls, "validate_params"):
        found = [f"{label}.params.{p}" if not p.startswith(label) else p
                 for p in cls.validate_params(params)]
        problems.extend(found)
        if found:
            return None
    return params


def build_params(cls: type[Node], raw: dict[str, Any], where: str, problems: list[str]):
    """Check ``raw`` against ``cls.Params`` (names, types, ranges); return an instance or None."""
    P = cls.Params
    fields = {f.name: f for f in dataclasses.fields(P)}
    try:
        hints = typing.get_type_hints(P, vars(sys.modules[cls.__module__]))
    except Exception:  # pragma: no cover - defensive: fall back to no type checks
        hints = {}
    n_before = len(problems)
    values: dict[str, Any] = {}
    for k, v in raw.items():
        if k not in fields:
            problems.append(f"{where}.{k}: unknown parameter{did_you_mean(k, fields)} "
                            f"(parameters of {cls.type_name}: {', '.join(fields) or 'none'})")
            continue
        f = fields[k]
        ok, v2, why = _check_type(v, hints.get(k, Any))
        if not ok:
            problems.append(f"{where}.{k}: {why}")
            continue
        m = f.metadata
        err = _check_range(v, m)  # as written (-250, not -250.0)
        if err:
            problems.append(f"{where}.{k}: {err}")
            continue
        values[k] = v2
    for name, f in fields.items():
        if name not in values and name not in raw and f.default is dataclasses.MISSING \
                and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            problems.append(f"{where}.{name}: required parameter is missing")
    if len(problems) > n_before:
        return None
    try:
        return P(**values)
    except (TypeError, ValueError) as e:
        problems.append(f"{where}: {e}")
        return None


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", str(t).replace("typing.", ""))


def _check_type(v: Any, t: Any) -> tuple[bool, Any, str]:
    if t is Any:
        return True, v, ""
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(t):
            if a is type(None):
                if v is None:
                    return True, v, ""
                continue
            ok, v2, _ = _check_type(v, a)
            if ok:
                return True, v2, ""
        names = " or ".join(_type_name(a) for a in typing.get_args(t) if a is not type(None))
        return False, v, f"must be {names}, got {type(v).__name__} {v!r}"
    if t is bool:
        return (isinstance(v, bool), v, f"must be true or false, got {v!r}")
    if t is int:
        ok = isinstance(v, int) and not isinstance(v, bool)
        return ok, v, f"must be an integer, got {type(v).__name__} {v!r}"
    if t is float:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        return ok, float(v) if ok else v, f"must be a number, got {type(v).__name__} {v!r}"
    if t is str:
        return isinstance(v, str), v, f"must be a string, got {type(v).__name__} {v!r}"
    if origin in (list, tuple):
        if not isinstance(v, list):
            return False, v, f"must be a list, got {type(v).__name__} {v!r}"
        args = typing.get_args(t)
        if args and args[0] is not Ellipsis:
            out = []
            for i, item in enumerate(v):
                ok, item2, why = _check_type(item, args[0])
                if not ok:
                    return False, v, f"item {i}: {why}"
                out.append(item2)
            v = out
        return True, (tuple(v) if origin is tuple else v), ""
    if origin is dict or t is dict:
        return isinstance(v, dict), v, f"must be a table, got {type(v).__name__} {v!r}"
    return True, v, ""


def _check_range(v: Any, m: typing.Mapping[str, Any]) -> str:
    if not m:
        return ""
    if m.get("choices") is not None and v not in m["choices"]:
        extra = did_you_mean(str(v), [str(c) for c in m["choices"]])
        return f"must be one of {', '.join(map(str, m['choices']))}, got {v!r}{extra}"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        bad = range_violation(v, m)
        if bad:
            op = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[bad[0]]
            return f"must be {op} {bad[1]}, got {v}"
    return ""
