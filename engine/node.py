"""The node contract.

A node is one processing step in a graph. The contract follows pedalboard / JUCE
(``prepare`` / ``process`` / ``reset`` / ``latency``) with MediaPipe-style static port
declarations that are checked when a graph is loaded, before anything runs:

.. code-block:: python

    @register
    class Gain(Node):
        type_name = "dsp.gain"
        inputs = {"audio": AUDIO}
        outputs = {"audio": AUDIO}

        @dataclass(frozen=True)
        class Params:
            db: float = param(0.0, ge=-120, le=40, doc="gain in dB")

        def negotiate(self, inputs):            # pure: derive output formats, raise on mismatch
            return {"audio": inputs["audio"]}

        def prepare(self, specs):               # allocate, load models, compile kernels
            self.g = np.float32(10 ** (self.params.db / 20))

        def process(self, io):                  # any length 0..max_block; no allocation
            x = io.audio("audio"); y = io.out("audio")
            np.multiply(x, self.g, out=y[: len(x)])
            io.produced("audio", len(x))

``reset()`` is never called by the engine: ``prepare`` sets up the state (calling ``reset``
itself, if the node has one), see :meth:`Node.reset`.

Real-time rules for ``process``: it runs on the DSP thread once per quantum (or on a worker thread
for nodes with ``thread = "worker"``); it must accept any block length from 0 to ``max_block``; it
must not block, allocate large buffers or log; heavy work belongs in Numba ``nogil`` kernels or
onnxruntime. A node's output must not depend on the block size.

Audio travels as float32 arrays of shape ``(frames, channels)``. An audio output port may produce a
different number of frames than it consumed (a resampler, or the VAD's gated ``speech`` port): the
node reports what it wrote with ``io.produced(port, n)``. Events travel beside audio on event ports.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .errors import NegotiationError, ParamError, PortError
from .events import Event

AUDIO = "audio"
EVENTS = "events"


@dataclass(frozen=True)
class AudioSpec:
    """The format of one audio stream, agreed once before running."""

    sample_rate: int
    channels: int
    max_block: int
    #: how far the stream lags its source: the latencies declared along its path (seconds;
    #: set by the runtime from each node's ``latency_samples``; not part of equality)
    latency_s: float = dataclasses.field(default=0.0, compare=False)

    def describe(self) -> str:
        ch = {1: "mono", 2: "stereo"}.get(self.channels, f"{self.channels} channels")
        return f"{self.sample_rate} Hz {ch}"


def param(
    default: Any = dataclasses.MISSING,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: tuple | None = None,
    doc: str = "",
) -> Any:
    """Declare a node parameter with its default, range and documentation."""
    meta = {"gt": gt, "ge": ge, "lt": lt, "le": le, "choices": choices, "doc": doc}
    if isinstance(default, (list, dict)):
        d = default
        return dataclasses.field(default_factory=lambda: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


_BOUNDS = (("gt", lambda v, b: v > b), ("ge", lambda v, b: v >= b),
           ("lt", lambda v, b: v < b), ("le", lambda v, b: v <= b))


def range_violation(value: float, meta) -> tuple[str, float] | None:
    """The first bound of a :func:`param`'s metadata that ``value`` breaks, as ``(key, bound)``
    (``("le", 40)``), or None."""
    for key, holds in _BOUNDS:
        bound = meta.get(key)
        if bound is not None and not holds(value, bound):
            return key, bound
    return None


class NodeIO:
    """What ``process`` sees for one quantum. Owned by the runtime and reused (no allocation)."""

    __slots__ = ("_in", "_out", "_produced", "_events_in", "_events_out", "start", "backlog",
                 "node_id", "frames", "stream_seconds")

    def __init__(self, node_id: str, out_buffers: dict[str, np.ndarray], event_ports: list[str]):
        self.node_id = node_id
        self._in: dict[str, np.ndarray] = {}
        self._out = out_buffers
        self._produced: dict[str, int] = dict.fromkeys(out_buffers, 0)
        self._events_in: dict[str, list[Event]] = {}
        self._events_out: dict[str, list[Event]] = {p: [] for p in event_ports}
        #: absolute sample index (on each input port's clock) of the first frame of this block
        self.start: dict[str, int] = {}
        #: number of quanta still queued behind this one (worker nodes); 0 on the DSP thread
        self.backlog = 0
        #: sources only: how many frames the runtime asks for in this quantum
        self.frames = 0
        #: in ``flush``: seconds of audio the stream had when it ended (None: unknown)
        self.stream_seconds: float | None = None

    # -- inputs
    def audio(self, port: str) -> np.ndarray:
        """The input block on ``port``: float32 ``(frames, channels)``, read-only by convention."""
        try:
            return self._in[port]
        except KeyError:  # only the failure path pays for the message
            raise self._no_port(port, "audio input", self._in,
                                " connected (io.has_audio(port) asks first)") from None

    def has_audio(self, port: str) -> bool:
        return port in self._in

    def events(self, port: str) -> list[Event]:
        """Events that arrived on ``port`` during this quantum (possibly empty)."""
        return self._events_in.get(port, _EMPTY)

    # -- outputs
    def out(self, port: str) -> np.ndarray:
        """The preallocated output buffer of ``port``, shape ``(max_block, channels)``."""
        try:
            return self._out[port]
        except KeyError:
            raise self._no_port(port, "audio output", self._out) from None

    def produced(self, port: str, frames: int) -> None:
        """Report how many frames were written to the start of ``out(port)``."""
        try:
            cap = len(self._out[port])
        except KeyError:
            raise self._no_port(port, "audio output", self._out) from None
        if not 0 <= frames <= cap:
            raise ValueError(f"produced({port!r}, {frames}): must be 0..{cap} "
                             "(the output buffer's length)")
        self._produced[port] = frames

    def emit(self, port: str, event: Event) -> None:
        """Send ``event`` (an :class:`~engine.events.Event`, stamped with its absolute
        ``sample`` on its ``sample_rate`` clock) on event port ``port``."""
        if not isinstance(event, Event):
            raise TypeError(f"emit({port!r}, ...) takes an engine.events.Event, got "
                            f"{type(event).__name__}")
        try:
            self._events_out[port].append(event)
        except KeyError:
            raise self._no_port(port, "event output", self._events_out) from None

    def _no_port(self, port: str, kind: str, have, where: str = "") -> PortError:
        """``b: no event output 'evts' (its event outputs: events)``: for a port name that is
        not one of the node's (a typo, or a port missing from its ``outputs``)."""
        names = ", ".join(have) or "none"
        return PortError(f"{self.node_id}: no {kind} {port!r}{where}{did_you_mean(port, have)} "
                         f"(its {kind}s: {names})")


_EMPTY: list[Event] = []


class Node:
    """Base class of every node. See the module docstring for the contract."""

    type_name: ClassVar[str] = ""
    #: input ports: name -> AUDIO | EVENTS
    inputs: ClassVar[dict[str, str]] = {}
    #: output ports: name -> AUDIO | EVENTS
    outputs: ClassVar[dict[str, str]] = {}
    #: input ports that may be left unconnected
    optional_inputs: ClassVar[frozenset[str]] = frozenset()
    #: "dsp" (runs in the DSP loop) or "worker" (own thread behind a bounded queue)
    thread: ClassVar[str] = "dsp"
    #: for worker nodes: queue policy when full, "drop_oldest" | "drop_newest" | "block"
    queue_policy: ClassVar[str] = "drop_oldest"
    queue_size: ClassVar[int] = 1000
    #: True for sources: they have no audio inputs and are pulled by the runtime
    is_source: ClassVar[bool] = False
    #: worker nodes: True to be called with an empty block (no audio, no events) on a quantum
    #: that brings nothing, when nothing is queued for it: the node sees time pass while its
    #: inputs are quiet (``asr.whisper`` notices that the VAD holds speech audio back, a
    #: silence that may end the turn). At most one such block waits in the queue.
    idle_quanta: bool = False
    #: the engine's quantum in seconds (set by the runtime before ``negotiate``)
    quantum_s: float = 0.01
    #: sources: True once the stream has ended (the run ends when every source has)
    finished: bool = False
    #: sources: False for one that follows the graph's clock and never keeps the run going
    #: (``source.playback``): the run ends when the others have, and the first source that
    #: holds the run gives the graph its clock (a graph of such sources only runs until stopped)
    holds_run: ClassVar[bool] = True
    #: False when the run goes as fast as it can, not at the audio's pace (set by the runtime
    #: before ``prepare``; a speaker then plays nothing)
    engine_realtime: bool = True
    #: what this run is, for logs (set by the runtime before ``prepare``): ``{"graph": its
    #: file, "sources": {node id: what it reads, e.g. a file's path or "microphone default"}}``
    engine_session: dict[str, Any] | None = None

    @dataclass(frozen=True)
    class Params:
        pass

    def __init__(self, node_id: str, params: Any):
        self.id = node_id
        self.params = params
        self.latency_samples = 0

    # -- lifecycle
    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        """Pure: given the formats on the audio inputs, return the formats of the audio outputs.

        Raise :class:`NegotiationError` with a message that names the fix on a mismatch.
        """
        return {}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        """Allocate buffers, load models, compile and warm kernels. ``specs`` holds the agreed
        formats of all audio ports, inputs and outputs (an output named like an input wins)."""

    def process(self, io: NodeIO) -> None:
        """Process one block. Must accept 0..max_block frames and must not allocate or block."""

    def reset(self) -> None:
        """Clear state (filters, recurrent states, buffers); keep parameters.

        The engine never calls it (nor does :func:`engine.testing.run_node`): an engine runs
        once, and a new run makes new nodes. It is for the node's own use (and a future
        restart): ``prepare`` must set up every bit of state ``process`` reads, for example
        by calling ``self.reset()`` at its end."""

    def flush(self, io: NodeIO) -> None:
        """End of stream: drain internal buffers and emit final results. Same I/O as process."""

    def close(self) -> None:
        """Release resources (files, streams, sessions)."""

    def control(self, values: dict[str, Any]) -> None:
        """Apply a run-time control change (thread-safe: called from the runtime between blocks)."""
        raise ParamError(f"node {self.id} ({self.type_name}) takes no controls")

    def check_control(self, values: dict[str, Any]) -> None:
        """Raise :class:`~engine.errors.ParamError` if :meth:`control` would refuse ``values``.
        Called by ``Engine.set`` on the caller's thread, so a typo fails there and then; it must
        not change any state. The default accepts anything for nodes that take controls (the
        node then reports a refusal as an ``engine.node_error``) and refuses for those that
        do not."""
        if type(self).control is Node.control:
            raise ParamError(f"node {self.id} ({self.type_name}) takes no controls")

    def stats(self) -> dict[str, Any]:
        """Node-specific statistics merged into the run's statistics."""
        return {}


# --------------------------------------------------------------------------------------------
# registry

_REGISTRY: dict[str, type[Node]] = {}


def register(cls: type[Node] | None = None, *, replace: bool = False):
    """Class decorator: make a node type available to graph files under ``cls.type_name``.

    Checks the class as a node author would want at import time (not when a graph loads):
    a ``type_name``, port kinds AUDIO / EVENTS, ``Params`` a frozen dataclass whose defaults
    pass their own ranges. A ``type_name`` already taken by another class is refused unless
    ``@register(replace=True)`` (deliberately shadowing a built-in)."""
    if cls is None:
        return lambda c: register(c, replace=replace)
    _check_node_class(cls)
    if not cls.__module__.startswith(f"{__package__}.nodes"):
        from . import nodes  # noqa: F401  (built-ins first, so a clash is seen now)
    old = _REGISTRY.get(cls.type_name)
    same = old is not None and (old.__module__, old.__qualname__) == (cls.__module__,
                                                                     cls.__qualname__)
    if old is not None and not same and not replace:
        raise TypeError(f"node type '{cls.type_name}' ({cls.__module__}.{cls.__qualname__}) is "
                        f"already registered by {old.__module__}.{old.__qualname__}: choose "
                        "another type_name, or @register(replace=True) to shadow it")
    _REGISTRY[cls.type_name] = cls
    return cls


def _check_node_class(cls: type) -> None:
    name = f"{cls.__module__}.{cls.__qualname__}"
    if not (isinstance(cls, type) and issubclass(cls, Node)):
        raise TypeError(f"{name}: @register takes a subclass of engine.node.Node")
    if not cls.type_name:
        raise TypeError(f"{name} has no type_name (e.g. type_name = \"dsp.my_node\")")
    for side in ("inputs", "outputs"):
        for port, kind in getattr(cls, side).items():
            if kind not in (AUDIO, EVENTS):
                raise TypeError(f"{name}.{side}[{port!r}]: port kind must be AUDIO or EVENTS "
                                f"(engine.node), got {kind!r}")
    P = getattr(cls, "Params", None)
    if P is None or not dataclasses.is_dataclass(P):
        raise TypeError(f"{name}.Params must be a @dataclass(frozen=True) of param(...) fields")
    if not P.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"{name}.Params must be frozen: @dataclass(frozen=True)")
    for f in dataclasses.fields(P):
        d = f.default
        if f.metadata and isinstance(d, (int, float)) and not isinstance(d, bool):
            bad = range_violation(d, f.metadata)
            if bad:
                raise TypeError(f"{name}.Params.{f.name}: default {d} breaks its own range "
                                f"({bad[0]} {bad[1]})")


def node_types() -> dict[str, type[Node]]:
    """Every registered node type: the built-ins, those of installed packages that declare the
    entry-point group ``audio_engine.nodes``, and modules loaded with :func:`load_plugin`."""
    from . import nodes  # noqa: F401  (imports every node module, which registers it)

    _load_entry_points()
    return dict(_REGISTRY)


_ENTRY_POINTS_LOADED = False


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="audio_engine.nodes"):
        try:
            ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plugin must not hide the built-ins
            import warnings

            warnings.warn(f"audio_engine.nodes entry point {ep.name!r} ({ep.value}) failed to "
                          f"load: {e!r}", stacklevel=2)


def load_plugin(spec: str) -> None:
    """Import a module of node types: a module name (``mypkg.nodes``) or a ``.py`` file path.
    Its ``@register`` classes become available to graph files."""
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    from .errors import EngineError

    path = Path(spec)
    try:
        if spec.endswith(".py") or path.exists():
            if not path.is_file():
                raise EngineError(f"--plugin {spec}: no such file")
            name = f"audio_engine_plugin_{path.stem}"
            mod_spec = importlib.util.spec_from_file_location(name, path)
            assert mod_spec is not None and mod_spec.loader is not None
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = module
            mod_spec.loader.exec_module(module)
        else:
            importlib.import_module(spec)
    except EngineError:
        raise
    except Exception as e:  # noqa: BLE001 - the author's bug, shown as one line
        missing = (e.name or "") if isinstance(e, ModuleNotFoundError) else ""
        if missing and not path.exists() and (spec == missing or spec.startswith(missing + ".")):
            raise EngineError(f"--plugin {spec}: {e} (give a module on sys.path or a .py "
                              "file)") from None
        # found, but it raised (an import of its own included)
        raise EngineError(f"--plugin {spec}: importing it raised {type(e).__name__}: {e}")\
            from None


def negotiate_problem(node: Node, in_specs: dict[str, AudioSpec], out_specs: Any) -> str:
    """What is wrong with ``out_specs``, what ``node.negotiate(in_specs)`` returned, or "".
    Loading a graph and :func:`engine.testing.run_node` both check with it: a dict of
    AudioSpec, one for every audio output (one named like an input may be left out: the
    input's format is taken), none for a port that is not one of the node's audio outputs."""
    if not isinstance(out_specs, dict):
        return (f"negotiate() must return a dict of output port -> AudioSpec, got {out_specs!r}"
                + (" (return {'audio': spec})" if isinstance(out_specs, AudioSpec) else ""))
    outs = [p for p, k in node.outputs.items() if k == AUDIO]
    for p, spec in out_specs.items():
        if p not in outs:
            return (f"negotiate() gave a format for {p!r}, which is not one of its audio outputs"
                    f"{did_you_mean(str(p), outs)} (its audio outputs: "
                    f"{', '.join(outs) or 'none'}; declare it in outputs = {{...}})")
        if not isinstance(spec, AudioSpec):
            return (f"negotiate() gave {type(spec).__name__} {spec!r} for {p!r}, not an "
                    "engine.node.AudioSpec")
    lost = [p for p in outs if p not in out_specs and p not in in_specs]
    if lost:
        return (f"negotiate() gave no format for audio output {', '.join(map(repr, lost))} "
                "(return {port: AudioSpec(...)} for every audio output)")
    return ""


def produced_nothing(node: Node, port: str, took_s: float, produced: int) -> str:
    """The warning for a node that took ``took_s`` seconds of audio and produced nothing on
    its audio output ``port`` over a whole run (it forgot ``io.produced``), or "". The
    engine's own nodes are not checked: a gate (the VAD's ``speech`` port) may rightly give
    nothing."""
    if produced or took_s <= 0 or type(node).__module__.startswith(f"{__package__}."):
        return ""
    return (f"nodes[{node.id}] ({node.type_name}): took {took_s:.1f} s of audio and produced "
            f"none on {node.id}.{port}: does process() call io.produced({port!r}, n)?")


def did_you_mean(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def require_rate(node_id: str, port: str, spec: AudioSpec, rates, producer: str = "") -> None:
    """Raise a NegotiationError that names the fix if ``spec.sample_rate`` is not in ``rates``."""
    if spec.sample_rate in rates:
        return
    want = " or ".join(f"{r} Hz" for r in rates)
    src = f" from {producer}" if producer else ""
    raise NegotiationError(
        f"{node_id}.{port} needs {want}, got {spec.sample_rate} Hz{src}: "
        f"add a dsp.resample with rate = {rates[0]} before it"
    )


def _file_in_the_way(p: Path) -> str:
    """"F is a file, not a folder" for the first of ``p``'s parents that is a file, or ""."""
    blocker = next((q for q in p.parents if q.exists() and not q.is_dir()), None)
    return f"{blocker} is a file, not a folder" if blocker is not None else ""


def unwritable(path: str | os.PathLike) -> str | None:
    """Why a file at ``path`` could not be written (its folder is created if missing), or
    None. Opens nothing, so an existing file is not emptied: sinks check in ``prepare`` and
    create the file when the first data arrives."""
    p = Path(path)
    blocker = _file_in_the_way(p)
    if blocker:  # mkdir would say "File exists", which misleads
        return blocker
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return e.strerror or str(e)
    if p.is_dir():
        return "a directory"
    if not os.access(p if p.exists() else p.parent, os.W_OK):
        return "permission denied"
    return None


def unwritable_dir(path: str | os.PathLike) -> str | None:
    """Why files could not be written in folder ``path``, or None. Checked by doing it:
    the folder is created if missing and a temporary file made (and removed) in it, which
    also answers for root (to whom ``os.access`` says yes on ``/proc`` or a read-only
    mount); folders created for the check are removed again, so validating a graph leaves
    nothing behind."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        return "a file, not a folder"
    blocker = _file_in_the_way(p)
    if blocker:
        return blocker
    made = [q for q in (p, *p.parents) if not q.exists() and not q.is_symlink()]
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as e:
        return e.strerror or str(e)
    finally:
        for q in made:  # innermost first
            try:
                q.rmdir()
            except OSError:
                break
    return None


def require_mono(node_id: str, port: str, spec: AudioSpec, producer: str = "") -> None:
    if spec.channels == 1:
        return
    src = f" from {producer}" if producer else ""
    raise NegotiationError(
        f"{node_id}.{port} needs mono, got {spec.describe()}{src}: "
        f"add a dsp.mix with channels = 1 before it"
    )
