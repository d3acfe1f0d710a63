"""The engine: compiles a validated graph and runs it.

Threads (after the Web Audio API's control/rendering split and JUCE's graph):

* **audio callbacks** (PortAudio, in the backends): copy into / out of preallocated rings only;
* **one DSP thread** runs every ``thread = "dsp"`` node in topological order, once per quantum
  (10 ms by default), and hands work to worker nodes;
* **worker threads**, one per ``thread = "worker"`` node (models: ASR, sound events; sinks that do
  I/O), each behind a :class:`~engine.queues.BoundedQueue` with an explicit policy when full;
* **a dispatcher thread** delivers every event to subscribers (``Engine.on``), the statistics and
  the console, so user callbacks never run on the audio or DSP threads.

A node's exception becomes an ``engine.node_error`` event; the graph keeps running.
"""

from __future__ import annotations

import atexit
import fnmatch
import logging
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import (
    AudioFileError,
    DeviceError,
    EngineError,
    GraphError,
    ModelError,
    NegotiationError,
    ParamError,
)
from .events import Control, Event, NodeError
from .graph import GraphSpec, NodeDecl, build_params, load_graph
from .node import AUDIO, AudioSpec, Node, NodeIO, negotiate_problem, node_types, produced_nothing
from .queues import BoundedQueue

_STOP = object()
_FLUSH = object()

log = logging.getLogger("engine")

#: engines started and not yet ended: stopped (without draining) when the interpreter exits, so
#: native threads (onnxruntime, PortAudio) are not torn down in the middle of their work
_LIVE: weakref.WeakSet[Engine] = weakref.WeakSet()


@atexit.register
def _stop_live_engines() -> None:
    for eng in list(_LIVE):
        try:
            eng.stop(drain=False, timeout=5.0)
        except Exception:  # noqa: BLE001 - exiting anyway
            pass


class _Timing:
    """Fixed-size ring of per-call durations (seconds) for mean / p99."""

    def __init__(self, size: int = 2048):
        self.buf = np.zeros(size, np.float64)
        self.n = 0
        self.total = 0.0

    def add(self, dt: float) -> None:
        self.buf[self.n % len(self.buf)] = dt
        self.n += 1
        self.total += dt

    def summary(self) -> dict[str, float]:
        k = min(self.n, len(self.buf))
        if k == 0:
            return {"mean_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "calls": 0}
        v = self.buf[:k]
        return {"mean_ms": round(float(v.mean()) * 1e3, 4),
                "p99_ms": round(float(np.percentile(v, 99)) * 1e3, 4),
                "max_ms": round(float(v.max()) * 1e3, 4), "calls": self.n}


class _NodeState:
    """Runtime wiring of one node: its I/O object, buffers, clocks and statistics."""

    def __init__(self, decl: NodeDecl, node: Node):
        self.decl = decl
        self.node = node
        self.id = decl.id
        self.specs: dict[str, AudioSpec] = {}
        self.out_bufs: dict[str, np.ndarray] = {}
        self.io: NodeIO | None = None
        self.stage: NodeIO | None = None  # where the DSP thread gathers this node's inputs
        self.audio_in: dict[str, tuple[_NodeState, str]] = {}
        self.event_in: dict[str, list[tuple[_NodeState, str]]] = {}
        self.consumers: list[tuple[_NodeState, str, str]] = []  # (consumer, in_port, out_port)
        self.total: dict[str, int] = {}  # frames produced so far per audio output
        self.start_of: dict[str, int] = {}  # frames produced before the current quantum
        self.inbox: deque[tuple[str, Event]] = deque()  # events from worker producers
        self.timing = _Timing()
        self.flush_s = 0.0  # time spent in flush() at the end of the stream (its thread's)
        self.errors = 0  # process() / flush() raised
        self.reported = 0  # engine.node_error events the node emitted itself (a clip not saved)
        self.worker: threading.Thread | None = None
        self.queue: BoundedQueue | None = None
        self.flushed = threading.Event()
        self.is_worker = decl.thread == "worker"
        self.frac = 0.0  # sources: fractional frame accumulator


class Engine:
    """A running (or runnable) graph.

    >>> with Engine.from_file("graphs/live_captions.toml") as eng:   # doctest: +SKIP
    ...     eng.on("transcript.final", lambda ev: print(ev.text))
    ...     eng.wait()

    ``input``: ``None`` keeps the graph's microphone; a file path streams that file instead (in
    real time unless ``realtime=False``); ``"feed"`` lets the application push audio with
    :meth:`feed`. ``realtime=False`` runs as fast as possible and makes every worker queue block
    instead of dropping, so results equal an offline pass. ``max_seconds`` ends the stream (and
    drains every node) once that much audio has gone through, to the 10 ms quantum.
    ``feed_idle_s`` > 0 makes a feed behave as a live microphone: when no audio has come for that
    long, the graph goes on with silence at the wall clock's pace (so a VAD sees the speaker stop
    when a remote client pauses or disconnects); 0 (default) waits for the application.
    ``raw``: the format of a headerless ``.raw`` input file, as ``source.file`` parameters
    (``{"raw_sample_rate": 8000, "raw_channels": 2, "raw_subtype": "PCM_24"}``).
    """

    def __init__(self, spec: GraphSpec, *, input: str | Path | None = None,
                 realtime: bool = True, device: str | int | None = None,
                 output_device: str | int | None = None, backend: str | None = None,
                 quantum_ms: float | None = None, loop: bool = False,
                 max_seconds: float | None = None, feed_idle_s: float = 0.0,
                 raw: dict[str, Any] | None = None):
        if isinstance(input, str) and input != "feed" and not Path(input).exists():
            from .node import did_you_mean

            hint = did_you_mean(input, ["feed"])
            if hint:
                raise EngineError(f"input={input!r}: no such audio file{hint}")
        if input == "feed":
            mics = [n.id for n in spec.nodes if n.type == "source.microphone"]
            if len(mics) > 1:
                raise EngineError(f"input=\"feed\" feeds one source, and the graph has "
                                  f"{len(mics)} microphones ({', '.join(mics)}): keep one (or "
                                  "run it on the devices)")
        if feed_idle_s < 0:
            raise EngineError(f"feed_idle_s must be >= 0, got {feed_idle_s}")
        if feed_idle_s and input != "feed":
            raise EngineError("feed_idle_s applies to input=\"feed\" only (a microphone is "
                              "live already, a file has its own end)")
        self.spec = _substitute_sources(spec, input, device, output_device, backend, loop,
                                        feed_idle_s, raw or {})
        self.realtime = realtime
        #: end the stream after this much audio on the primary source's clock (exact to a quantum)
        self.max_seconds = max_seconds
        self.quantum_s = (quantum_ms or self.spec.settings.quantum_ms) / 1000.0
        self._subs: list[tuple[str, Callable[[Event], Any]]] = []
        self._subs_lock = threading.Lock()
        self._bus: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._started = False
        self._dsp: threading.Thread | None = None
        self._dispatcher: threading.Thread | None = None
        self._controls: deque[tuple[str, dict[str, Any]]] = deque()
        self.event_counts: dict[str, int] = {}
        self.recent_events: deque[Event] = deque(maxlen=50)
        self._latency: dict[str, deque[tuple[float, float]]] = {}
        self._clock_map: deque[tuple[float, float]] = deque(maxlen=20000)
        self.quanta = 0
        self.overhead = _Timing()
        self._t_start = 0.0
        self._t_first = 0.0  # when the first quantum of audio was there (after device start-up)
        self._t_end = 0.0
        self._t_input_end = 0.0  # the input ended (or stop() came); the drain follows
        self.audio_seconds = 0.0
        self.input_level = 0.0
        self.error: BaseException | None = None
        #: SystemExit / KeyboardInterrupt raised in a callback: stops the engine, raised again
        #: by wait() / run() on the application's thread
        self._callback_exit: BaseException | None = None
        self.last_callback_error: str | None = None
        self._drain = True  # stop(): flush every node at the end
        self._abort = False  # stop(drain=False): also cut short a drain under way
        self._feed_adapter: Any = None  # feed(): rate / channel conversion, made on first use
        self._warned_scale = False
        self._states: list[_NodeState] = []
        self._compile()
        for w in self.spec.unused():  # runs, but likely a wiring slip
            log.warning("%s: %s", self.spec.source, w)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_file(cls, path: str | Path, params: dict[str, dict[str, Any]] | None = None,
                  **kw: Any) -> Engine:
        """Load and validate a graph file; ``params`` overrides node parameters
        (``{"asr": {"step_ms": 400}}``, checked like the file's own); ``kw`` as for Engine."""
        return cls(load_graph(path, params), **kw)

    def _compile(self) -> None:
        order = self.spec.order()
        states: dict[str, _NodeState] = {}
        problems: list[str] = []
        for decl in order:
            st = _NodeState(decl, decl.cls(decl.id, decl.params))
            states[decl.id] = st
            for port, refs in decl.inputs.items():
                for pid, pport in refs:
                    prod = states[pid]
                    if decl.cls.inputs[port] == AUDIO:
                        st.audio_in[port] = (prod, pport)
                    else:
                        st.event_in.setdefault(port, []).append((prod, pport))
                    prod.consumers.append((st, port, pport))
        # stage 5: format negotiation in topological order, collecting every problem
        for st in states.values():
            in_specs = {}
            missing = False
            for port, (prod, pport) in st.audio_in.items():
                if pport not in prod.specs:
                    missing = True
                    continue
                in_specs[port] = prod.specs[pport]
            if missing:
                continue
            try:
                st.node.quantum_s = self.quantum_s
                out_specs = st.node.negotiate(in_specs)
            except NegotiationError as e:
                feeders = ", ".join(f"{port} <- {p.id}.{pp} ({p.specs[pp].describe()})"
                                    for port, (p, pp) in st.audio_in.items() if pp in p.specs)
                problems.append(f"nodes[{st.id}]: {e}" + (f" [inputs: {feeders}]" if feeders
                                                           else ""))
                continue
            except (AudioFileError, DeviceError, ModelError):
                raise  # not a graph problem: the message names the file / device / model
            except EngineError as e:
                problems.append(f"nodes[{st.id}]: {e}")
                continue
            except Exception as e:  # noqa: BLE001 - a bug in the node: one line, with its path
                problems.append(f"nodes[{st.id}] ({st.decl.type}): negotiate() raised "
                                f"{type(e).__name__}: {e}")
                continue
            bad = negotiate_problem(st.node, in_specs, out_specs)
            if bad:
                problems.append(f"nodes[{st.id}] ({st.decl.type}): {bad}")
                continue
            # each output lags its inputs' worst path plus the node's own declared latency
            lag = max((s.latency_s for s in in_specs.values()), default=0.0)
            for port, spec in out_specs.items():
                own = st.node.latency_samples / spec.sample_rate if spec.sample_rate else 0.0
                out_specs[port] = replace(spec, latency_s=max(spec.latency_s, lag + own))
            st.specs = {**in_specs, **out_specs}
        if problems:
            raise GraphError(self.spec.source, problems)
        for st in states.values():
            for port, spec in st.specs.items():
                if st.node.outputs.get(port) == AUDIO:
                    st.out_bufs[port] = np.zeros((spec.max_block, spec.channels), np.float32)
                    st.total[port] = 0
                    st.start_of[port] = 0
            ev_ports = [p for p, k in st.node.outputs.items() if k != AUDIO]
            st.io = NodeIO(st.id, st.out_bufs, ev_ports)
            # a worker's own io belongs to its thread; the DSP thread gathers into `stage`
            st.stage = NodeIO(st.id, {}, []) if st.is_worker else st.io
        self._states = list(states.values())
        self._by_id = states
        self.sources = [s for s in self._states if s.node.is_source]
        # the sources that keep the run going and give it its clock (not source.playback)
        self._run_sources = [s for s in self.sources if s.node.holds_run] or self.sources

    def prepare(self) -> None:
        """Load models and warm kernels of every node (done by :meth:`start` if not yet)."""
        if getattr(self, "_prepared", False):
            return
        errors: list[tuple[_NodeState, EngineError]] = []
        session = {"graph": self.spec.source, "sources": {
            n.id: _describe_source(n) for n in self.spec.nodes
            if n.cls.is_source and n.cls.holds_run}}
        for st in self._states:
            st.node.engine_realtime = self.realtime
            st.node.engine_session = session
            try:
                st.node.prepare(st.specs)
            except EngineError as e:
                errors.append((st, e))
            except Exception as e:  # noqa: BLE001 - a bug in the node: one line, with its path
                errors.append((st, EngineError(f"nodes[{st.id}] ({st.decl.type}): prepare() "
                                               f"raised {type(e).__name__}: {e}")))
        if errors:
            for st in self._states:
                _safe_close(st.node)
            if len(errors) == 1:
                raise errors[0][1]
            raise GraphError(self.spec.source, [f"nodes[{st.id}] ({st.decl.type}): {e}"
                                                for st, e in errors],
                             "starting the graph (its files, models and devices)")
        self._prepared = True

    # ------------------------------------------------------------------ public API
    def on(self, pattern: str, callback: Callable[[Event], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` for events whose type matches ``pattern`` (``"*"``,
        ``"transcript.final"``, ``"vad.*"``; the types are listed in :mod:`engine.events`).
        Returns a function that unsubscribes.

        Callbacks run one at a time on the engine's dispatcher thread, never on the audio or
        DSP threads, so a slow callback delays later events but never the audio. An exception
        in a callback is logged (logger ``engine``, with its traceback) and counted
        (``stats()["events"]["engine.callback_error"]``); later events are still delivered.
        ``sys.exit()`` or ``KeyboardInterrupt`` in a callback stops the engine and is raised
        again by :meth:`wait` / :meth:`run`. A callback may call :meth:`stop` (it returns at
        once there); it must not wait for a thread that is itself waiting in :meth:`stop`.
        A pattern that matches no known event type is logged as a warning (a typo such as
        ``"transcript.finals"`` would otherwise never fire)."""
        if not isinstance(pattern, str) or not pattern:
            raise TypeError(f"Engine.on(pattern, callback): pattern is an event type or a "
                            f"pattern such as 'vad.*' or '*', got {pattern!r}")
        if not callable(callback):
            raise TypeError(f"Engine.on({pattern!r}, callback): callback must be callable "
                            f"(a function taking the event), got {callback!r}")
        known = known_event_types()
        if not any(fnmatch.fnmatchcase(t, pattern) for t in known):
            from .node import did_you_mean

            log.warning("Engine.on(%r): no event type matches%s", pattern,
                        did_you_mean(pattern, sorted(known)))
        item = (pattern, callback)
        with self._subs_lock:
            self._subs.append(item)

        def off() -> None:
            with self._subs_lock:
                if item in self._subs:
                    self._subs.remove(item)
        return off

    @property
    def feed_format(self) -> tuple[int, int]:
        """``(sample_rate, channels)`` that :meth:`feed` expects without conversion."""
        p = self._feed_source().params
        return int(p.sample_rate), int(p.channels)

    def _feed_source(self) -> Any:
        src = [s.node for s in self.sources if hasattr(s.node, "push")]
        if not src:
            raise EngineError("feed() needs an engine created with input=\"feed\"")
        return src[0]

    def feed(self, samples: Any, rate: int | None = None) -> int:
        """Push audio into a started graph made with ``input="feed"``; call it from one thread.

        ``samples``: a NumPy array, frames x channels (1-D for mono), float in [-1, 1] or
        integer PCM (int16, int32, uint8: full scale becomes 1.0). ``rate``: its sample rate,
        if not the graph's (:attr:`feed_format`); it is then resampled, and the rate must stay
        the same for the whole stream. More channels than a mono graph expects are averaged.
        Waits while the feed's 30 s buffer is full, so nothing pushed is lost. Returns the
        frames accepted at the graph's rate (fewer only if the engine stopped meanwhile).
        Raises :class:`EngineError` on misuse (not started, already ended, wrong shape, NaN or
        infinite samples)."""
        src = self._feed_source()
        if not self._started:
            raise EngineError("feed() before start(): start the engine first")
        if src.ended:
            raise EngineError("feed() after end_feed(): the stream has ended")
        if self._done.is_set() or self._stop.is_set():
            raise EngineError("feed() after the engine stopped: the audio would be lost")
        if self._feed_adapter is None:
            from .nodes.feed import FeedAdapter

            self._feed_adapter = FeedAdapter(*self.feed_format)
        x = self._as_frames(samples, self._feed_adapter.out_channels)
        try:
            x = self._feed_adapter.convert(x, rate)
        except EngineError as e:
            raise EngineError(f"feed(): {e}") from None
        return src.push(x, lambda: self.running)

    def _as_frames(self, samples: Any, channels: int, who: str = "feed()") -> np.ndarray:
        """``samples`` as float32 frames x ``channels`` (see :meth:`feed`); ``who`` names the
        call in error messages."""
        if not isinstance(samples, np.ndarray):
            x = np.asarray(samples)
            if x.dtype.kind in "iu":  # a Python list of ints: which PCM width is unknowable
                raise EngineError(f"{who} got a list of integers: pass a NumPy array with "
                                  "the PCM's dtype (np.asarray(data, np.int16)) or floats in "
                                  "[-1, 1]")
        else:
            x = samples
        if x.dtype.kind in "iu":  # integer PCM: full scale -> 1.0 (unsigned: offset midpoint)
            info = np.iinfo(x.dtype)
            mid = (int(info.max) + int(info.min) + 1) / 2
            x = (x.astype(np.float64) - mid) / (int(info.max) + 1 - mid)
        elif x.dtype.kind != "f":
            hint = " (raw PCM bytes: np.frombuffer(data, np.int16))" if x.dtype.kind == "S" \
                else ""
            raise EngineError(f"{who} takes float or integer PCM samples, got {x.dtype}{hint}")
        if x.ndim == 1:
            x = x[:, None]
        elif x.ndim != 2:
            raise EngineError(f"{who} takes frames x channels (or 1-D mono), got an array of "
                              f"shape {x.shape}")
        if x.shape[1] == 0:
            raise EngineError(f"{who} got an array of shape {x.shape}: no channels")
        if x.shape[1] != channels and x.shape[1] > 64 and x.shape[0] <= 64:
            raise EngineError(f"{who} got shape {x.shape}: frames come first (frames x "
                              f"channels); pass the transposed array (x.T)")
        x = np.ascontiguousarray(x, dtype=np.float32)
        finite = np.isfinite(x)
        if not finite.all():  # models would take them in (a lost turn), a speaker would play
            bad = int(x.size - np.count_nonzero(finite))  # them as full-scale noise
            raise EngineError(f"{who} got NaN or infinite samples ({bad} of {x.size}): "
                              "nothing of this array was taken; np.nan_to_num(x) replaces them")
        if len(x) and not self._warned_scale:
            peak = float(np.max(np.abs(x)))
            if peak > 2.0:
                self._warned_scale = True
                log.warning("%s: float samples peak at %.0f; floats are taken as [-1, 1] "
                            "(int16 PCM as floats? pass the int16 array itself, or divide "
                            "by 32768)", who, peak)
        return x

    def end_feed(self) -> None:
        """Declare the end of fed audio: the graph drains and stops (:meth:`wait` returns)."""
        if self._feed_adapter is not None and self.running:  # the resampler's last samples
            tail = self._feed_adapter.flush()
            if len(tail):
                self._feed_source().push(tail, lambda: self.running)
        for s in self.sources:
            if hasattr(s.node, "end"):
                s.node.end()  # type: ignore[attr-defined]

    def play(self, audio: Any, rate: int | None = None, node: str | None = None) -> int:
        """Play ``audio`` through the graph's ``source.playback`` node (wired to a
        ``sink.speaker``) while the graph listens, e.g. an assistant's reply; returns the
        clip's id at once. Clips queue and play one after the other; ``playback.started``
        and then ``playback.finished`` or ``playback.interrupted`` (events with ``clip`` = the
        id) say what happened, stamped on the graph's clock.

        ``audio``: a NumPy array as :meth:`feed` takes it (frames x channels or 1-D; float in
        [-1, 1] or integer PCM); a mono clip goes to every channel. ``rate``: its sample
        rate, if not the node's; it is resampled here, on the caller's thread, with the
        engine's streaming resampler (about 2 ms per second of audio). ``node``: the
        playback node's id, needed only when the graph has several. Safe from any thread, and
        from several at once (the main thread and a callback). Clips still playing or waiting
        when the stream ends get ``playback.interrupted`` with ``reason = "ended"`` (not after
        ``stop(drain=False)``, which drops them without events). Raises :class:`EngineError`
        on misuse (not started or already ended, no playback node, ``max_clips`` clips already
        waiting, a bad array: NaN or infinite samples included)."""
        pb = self._playback_node(node, "play()")
        if not self._started or self._done.is_set() or self._stop.is_set():
            raise EngineError("play() needs a running engine: call start() first (an engine "
                              "that stopped plays nothing)")
        from .nodes.feed import FeedAdapter

        ch = int(pb.params.channels)
        x = self._as_frames(audio, ch, "play()")
        if x.shape[1] != ch and not (x.shape[1] == 1 or ch == 1):
            raise EngineError(f"play() got {x.shape[1]} channels; '{pb.id}' plays {ch} "
                              f"(mono clips are copied to every channel)")
        # a mono clip is resampled once, then copied to every channel
        adapter = FeedAdapter(int(pb.params.sample_rate), 1 if x.shape[1] == 1 else ch)
        try:
            y = adapter.convert(x, rate)
        except EngineError as e:
            raise EngineError(f"play(): {e}") from None
        tail = adapter.flush()
        if len(tail):
            y = np.concatenate([y, tail])
        if y.shape[1] == 1 and ch > 1:
            y = np.repeat(y, ch, axis=1)
        return pb.submit(np.ascontiguousarray(y, dtype=np.float32))

    def stop_playback(self, node: str | None = None) -> None:
        """Stop what :meth:`play` is playing, within one quantum (10 ms) plus the speaker's
        buffer, with the node's short fade (no click), and drop the clips waiting (each
        gets a ``playback.interrupted`` event). For a barge-in: call it from a
        ``vad.speech_started`` callback. Does nothing when nothing plays. Safe from any
        thread (it only posts a message to the DSP thread)."""
        self._playback_node(node, "stop_playback()").interrupt()

    def _playback_node(self, node_id: str | None, who: str) -> Any:
        ids = [s.id for s in self._states if s.decl.type == "source.playback"]
        if not ids:
            raise EngineError(f"{who} needs a source.playback node wired to a sink.speaker in "
                              "the graph (graphs/assistant.toml has one: [[nodes]] id = "
                              "\"reply\", type = \"source.playback\")")
        if node_id is None:
            if len(ids) > 1:
                raise EngineError(f"{who}: the graph has {len(ids)} playback nodes "
                                  f"({', '.join(ids)}): say which with node=")
            node_id = ids[0]
        elif node_id not in ids:
            from .node import did_you_mean
            raise EngineError(f"{who}: no source.playback node '{node_id}'"
                              f"{did_you_mean(node_id, ids)} (the graph's: {', '.join(ids)})")
        return self._by_id[node_id].node

    def set(self, node_id: str, **values: Any) -> None:
        """Send a control change to a node (a spatializer position, a gain), applied at the
        next quantum boundary (within 10 ms of audio) on the DSP thread. Safe to call from any
        thread; values the node would refuse raise :class:`ParamError` here. For changes at an
        exact sample, send ``Control`` events into the node's ``control`` port instead."""
        if node_id not in self._by_id:
            from .node import did_you_mean
            raise ParamError(f"no node '{node_id}'{did_you_mean(node_id, self._by_id)}")
        self._by_id[node_id].node.check_control(values)
        self._controls.append((node_id, values))

    def start(self) -> Engine:
        """Load the models (if :meth:`prepare` has not), start the threads and the sources.
        Calling it again while the engine runs does nothing (so ``with eng:`` after
        ``eng.start()`` is fine). An engine runs once: after it has ended, create a new one
        for the next stream."""
        if self._done.is_set():
            raise EngineError("this Engine has already run and stopped; an Engine runs once: "
                              "create a new one (Engine.from_file(...)) for the next stream")
        if self._started:
            return self
        self.prepare()
        self._started = True
        _LIVE.add(self)
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="engine-dispatch",
                                            daemon=True)
        self._dispatcher.start()
        for st in self._states:
            if st.is_worker:
                policy = "block" if not self.realtime else st.decl.queue_policy
                st.queue = BoundedQueue(st.decl.queue_size, policy)
                st.worker = threading.Thread(target=self._worker_loop, args=(st,),
                                             name=f"worker-{st.id}", daemon=True)
                st.worker.start()
        try:
            for st in self._states:
                if hasattr(st.node, "start"):
                    st.node.start()  # type: ignore[attr-defined]
        except BaseException:
            self._shutdown_threads()
            raise
        self._t_start = time.monotonic()
        self._dsp = threading.Thread(target=self._dsp_loop, name="engine-dsp", daemon=True)
        self._dsp.start()
        return self

    def stop(self, drain: bool = True, timeout: float = 60.0) -> None:
        """Stop the sources; with ``drain`` every node is flushed so final results come out
        (without, work still queued for worker nodes is dropped). Waits until every thread has
        ended and every event has been delivered, at most ``timeout`` seconds; called from a
        callback it only asks for the stop and returns. On an engine never started it releases
        what :meth:`prepare` loaded. Safe to call more than once."""
        if not self._started:
            if not self._done.is_set():
                for st in self._states:
                    _safe_close(st.node)
                self._done.set()
            return
        self._drain = drain
        if not drain:
            self._abort = True  # also ends a drain already under way, after the node at work
        self._stop.set()
        if threading.current_thread() is self._dispatcher:
            return  # the DSP thread's shutdown waits for this thread: do not wait for it here
        if self._dsp is not None:
            self._dsp.join(timeout)
        self._done.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the graph has ended (a file or :meth:`end_feed` reached its end, or
        :meth:`stop` was called); True if it ended, False on ``timeout``. A microphone, or a
        feed without :meth:`end_feed`, never ends by itself. Raises again a ``SystemExit`` /
        ``KeyboardInterrupt`` that a callback raised."""
        if not self._started:
            raise EngineError("wait() before start(): start the engine first (or use run())")
        ended = self._done.wait(timeout)
        self._raise_callback_exit()
        return ended

    def run(self, duration: float | None = None) -> dict[str, Any]:
        """Start, run until the sources end (or ``duration`` seconds), drain, return stats.
        Ctrl-C (``KeyboardInterrupt``) stops and drains the graph, then is raised again."""
        self.start()
        try:
            if not self._done.wait(duration):
                self.stop()
        except KeyboardInterrupt:
            self.stop()
            raise
        self._raise_callback_exit()
        if self.error is not None:
            raise self.error
        return self.stats()

    def _raise_callback_exit(self) -> None:
        exc, self._callback_exit = self._callback_exit, None
        if exc is not None:
            self.stop()
            raise exc

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._started and not self._done.is_set()

    def node(self, node_id: str) -> Node:
        return self._by_id[node_id].node

    # ------------------------------------------------------------------ DSP thread
    def _dsp_loop(self) -> None:
        try:
            self._run_quanta()
            self._t_input_end = time.monotonic()
            if self._drain:
                self._flush_all()
                if not self._abort:
                    self._warn_produced_nothing()
        except BaseException as e:  # a bug in the engine itself: record and end
            self.error = e
            self._bus.put(NodeError(0, 1, "engine", message=f"engine stopped: {e!r}"))
        finally:
            self._t_end = time.monotonic()
            self._shutdown_threads()
            for st in self._states:
                _safe_close(st.node)
            _LIVE.discard(self)
            self._done.set()

    def _warn_produced_nothing(self) -> None:
        """After the drain: a node that took audio and produced none on an audio output that
        other nodes take most likely forgot ``io.produced``: downstream got nothing, and the
        run would otherwise end quietly with exit 0."""
        for st in self._states:
            if st.errors:  # it raised: reported already, with its traceback
                continue
            took = max((p.total.get(pp, 0) / p.specs[pp].sample_rate
                        for p, pp in st.audio_in.values() if p.specs[pp].sample_rate),
                       default=0.0)
            for port in dict.fromkeys(pport for _, _, pport in st.consumers):
                if port in st.total:
                    msg = produced_nothing(st.node, port, took, st.total[port])
                    if msg:
                        log.warning("%s", msg)

    def _frames_for(self, st: _NodeState) -> int:
        rate = st.specs["audio"].sample_rate if "audio" in st.specs else 0
        exact = rate * self.quantum_s + st.frac
        n = int(exact)
        st.frac = exact - n
        return n

    def _run_quanta(self) -> None:
        q = 0
        t0 = time.monotonic()
        primary = self._run_sources[0] if self._run_sources else None
        prate = primary.specs["audio"].sample_rate if primary else 1
        capture_lag = primary is not None and hasattr(primary.node, "capture_lag_s")
        pc = time.perf_counter
        while not self._stop.is_set():
            # --- pacing: wait until every source can deliver this quantum
            wants = {st.id: self._frames_for(st) for st in self.sources}
            live_wait = False
            for st in self.sources:
                avail = getattr(st.node, "available", None)
                if avail is not None:
                    live_wait = True
                    while not self._stop.is_set() and not st.node.finished \
                            and avail() < wants[st.id]:  # type: ignore[attr-defined]
                        if not st.node.wait_more():  # type: ignore[attr-defined]
                            break
            if self._stop.is_set():
                break
            if self.realtime and not live_wait:
                target = t0 + (q + 1) * self.quantum_s
                delay = target - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if q == 0:
                self._t_first = time.monotonic()
            tq = pc()
            self._apply_controls()
            node_time = self._step(wants)
            # --- bookkeeping on the primary clock
            if primary is not None:
                n = primary.io._produced.get("audio", 0)
                if n:
                    x = primary.out_bufs["audio"][:n]
                    self.input_level = float(np.sqrt(np.mean(x * x)))
                self.audio_seconds = primary.total.get("audio", 0) / prate
                # when that audio was in the room: a device's capture lag (its buffering and
                # what still waits in the ring) is subtracted, so latencies include it
                lag = primary.node.capture_lag_s() if capture_lag else 0.0
                self._clock_map.append((self.audio_seconds, time.monotonic() - lag))
            self.overhead.add(max(pc() - tq - node_time, 0.0))
            q += 1
            self.quanta = q
            if self._run_sources and all(s.node.finished for s in self._run_sources):
                break
            if self.max_seconds is not None and self.audio_seconds >= self.max_seconds - 1e-9:
                break

    def _call(self, st: _NodeState, fn: Callable, io: NodeIO) -> None:
        try:
            fn(io)
        except Exception as e:  # noqa: BLE001 - a node's failure becomes an event
            st.errors += 1
            if st.node.is_source:
                st.node.finished = True  # a broken source ends
            # once per node, so that its author finds the failing line (a log call on the
            # DSP thread, but on the failure path only, and once)
            if st.errors == 1:
                log.warning("nodes[%s] (%s): first error, traceback follows (later ones are "
                            "counted and reported as engine.node_error)", st.id, st.decl.type,
                            exc_info=e)
            if st.errors <= 3 or st.errors % 100 == 0:
                # where in the stream: the block's position on its first input's clock (a
                # source's: its output's)
                port = next((p for p in io.start if p in st.specs), None)
                if port is not None:
                    rate, pos = st.specs[port].sample_rate, io.start[port]
                else:
                    rate = next(iter(st.specs.values())).sample_rate if st.specs else 1
                    pos = max(st.start_of.values(), default=0)
                msg = f"{st.decl.type} raised {type(e).__name__}: {e}"
                if st.errors > 3:
                    msg += f" ({st.errors} errors so far)"
                self._bus.put(NodeError(pos, rate, st.id, message=msg))

    def _gather_inputs(self, st: _NodeState) -> None:
        io = st.stage
        ins = {}
        for port, (prod, pport) in st.audio_in.items():
            n = prod.io._produced[pport]
            ins[port] = prod.out_bufs[pport][:n]
            io.start[port] = prod.start_of[pport]
        io._in = ins
        evs: dict[str, list[Event]] = {}
        for port, prods in st.event_in.items():
            for prod, pport in prods:
                if not prod.is_worker:
                    got = prod.io._events_out.get(pport)
                    if got:
                        evs.setdefault(port, []).extend(got)
        while st.inbox:
            port, ev = st.inbox.popleft()
            evs.setdefault(port, []).append(ev)
        io._events_in = evs

    def _enqueue(self, st: _NodeState) -> None:
        io = st.stage
        has_audio = any(len(a) for a in io._in.values())
        assert st.queue is not None
        if not has_audio and not io._events_in and \
                (not st.node.idle_quanta or len(st.queue)):  # an idle quantum: see Node
            return
        item = ({p: a.copy() for p, a in io._in.items()}, dict(io.start), io._events_in)
        st.queue.put(item)

    def _publish(self, st: _NodeState) -> None:
        for port, evs in st.io._events_out.items():
            for ev in evs:
                if isinstance(ev, NodeError):
                    st.reported += 1
                self._bus.put(ev)
                for cons, cport, pport in st.consumers:
                    if pport == port and st.is_worker:
                        cons.inbox.append((cport, ev))

    def _apply_controls(self) -> None:
        while self._controls:
            nid, values = self._controls.popleft()
            st = self._by_id[nid]
            try:
                st.node.control(values)
            except EngineError as e:
                self._bus.put(NodeError(0, 1, nid, message=f"control rejected: {e}"))
            ctl = Control(0, 1, "engine", target=nid, values=tuple(values.items()))
            self._bus.put(ctl)

    def _step(self, wants: dict[str, int] | None, flush_at: int | None = None) -> float:
        """Run every node once. ``wants`` gives each source's frame count (None: sources are
        silent). With ``flush_at``, nodes before that index produce nothing, the node at it is
        flushed, and the nodes after it process what it drained. Returns node CPU time."""
        pc = time.perf_counter
        node_time = 0.0
        for idx, st in enumerate(self._states):
            if st.is_worker:  # its own io belongs to its thread: only stage and enqueue here
                if flush_at is not None and idx < flush_at:
                    continue
                self._gather_inputs(st)
                self._enqueue(st)
                if idx == flush_at:
                    assert st.queue is not None
                    st.flushed.clear()
                    st.queue.put(_FLUSH, force=True)
                    st.flushed.wait(300.0)
                continue
            io = st.io
            for p in st.total:
                st.start_of[p] = st.total[p]
                io._produced[p] = 0
            for lst in io._events_out.values():
                lst.clear()
            if st.node.is_source:
                if idx == flush_at:  # end of stream: a source may still have events to give
                    io.frames = 0
                    fn = st.node.flush
                elif wants is None:
                    continue
                else:
                    io.frames = wants[st.id]
                    fn = st.node.process
                io.start["audio"] = st.start_of.get("audio", 0)
            elif flush_at is not None and idx < flush_at:
                continue
            else:
                self._gather_inputs(st)
                fn = st.node.flush if idx == flush_at else st.node.process
            ts = pc()
            self._call(st, fn, io)
            dt = pc() - ts
            if idx == flush_at:  # a drain (a speaker waits for its buffer to play out) is
                st.flush_s += dt  # not a quantum's work: kept apart from the CPU figures
            else:
                st.timing.add(dt)
            node_time += dt
            for p, n in io._produced.items():
                st.total[p] += n
            self._publish(st)
        return node_time

    def _flush_all(self) -> None:
        """End of stream: flush every node in topological order so finals come out (sources
        too, where they define ``flush``: ``source.playback`` ends its clips). Before each
        flush, a silent pass delivers events still in flight from worker threads."""
        for st in self._states:
            st.io.stream_seconds = self.audio_seconds  # type: ignore[union-attr]
        for idx, st in enumerate(self._states):
            if self._abort:
                break
            if st.node.is_source and type(st.node).flush is Node.flush:
                continue
            self._step(None)
            self._step(None, flush_at=idx)

    # ------------------------------------------------------------------ workers
    def _worker_loop(self, st: _NodeState) -> None:
        io = st.io
        assert st.queue is not None
        pc = time.perf_counter
        while True:
            item = st.queue.get()
            if item is _STOP:
                break
            for lst in io._events_out.values():
                lst.clear()
            if item is _FLUSH:
                io._in, io._events_in = {}, {}
                ts = pc()
                self._call(st, st.node.flush, io)
                st.flush_s += pc() - ts  # (as on the DSP thread: apart from the CPU figures)
                self._publish(st)
                st.flushed.set()
                continue
            io._in, io.start, io._events_in = item
            io.backlog = len(st.queue)
            ts = pc()
            self._call(st, st.node.process, io)
            st.timing.add(pc() - ts)
            self._publish(st)

    def _shutdown_threads(self) -> None:
        drain = self._drain
        for st in self._states:
            if st.queue is not None:
                if not drain:  # stop(drain=False): work still queued is dropped, not done
                    st.queue.clear()
                st.queue.put(_STOP, force=True)
        for st in self._states:
            if st.worker is not None:
                st.worker.join(30.0)
        for st in self._states:
            if hasattr(st.node, "stop"):
                try:
                    st.node.stop()  # type: ignore[attr-defined]
                except Exception:  # noqa: BLE001
                    pass
        self._bus.put(_STOP)
        if self._dispatcher is not None and self._dispatcher is not threading.current_thread():
            self._dispatcher.join(10.0)

    # ------------------------------------------------------------------ dispatcher
    def _dispatch_loop(self) -> None:
        while True:
            ev = self._bus.get()
            if ev is _STOP:
                break
            self.event_counts[ev.type] = self.event_counts.get(ev.type, 0) + 1
            if ev.type != "vad.probability" and ev.type != "sound.scores":
                self.recent_events.append(ev)
            self._record_latency(ev)
            with self._subs_lock:
                subs = list(self._subs)
            heard = False
            for pattern, cb in subs:
                if pattern == "*" or pattern == ev.type or fnmatch.fnmatchcase(ev.type, pattern):
                    heard = heard or pattern != "*"
                    try:
                        cb(ev)
                    except Exception as e:  # noqa: BLE001 - a user callback must not kill us
                        self._callback_failed(cb, ev, e)
                    except BaseException as e:  # SystemExit, KeyboardInterrupt: stop, re-raise
                        if self._callback_exit is None:
                            self._callback_exit = e
                        self._drain = True
                        self._stop.set()
            if ev.type == NodeError.type and not heard:  # nobody reports it: the log does
                log.warning("%s: %s", ev.node, getattr(ev, "message", ""))

    def _callback_failed(self, cb: Callable, ev: Event, e: Exception) -> None:
        n = self.event_counts.get("engine.callback_error", 0) + 1
        self.event_counts["engine.callback_error"] = n
        self.last_callback_error = repr(e)
        if n <= 3 or n % 100 == 0:
            name = getattr(cb, "__qualname__", repr(cb))
            more = "; from now on every 100th is logged" if n == 3 else ""
            log.error("callback %s raised on %s (%d callback errors so far%s)", name, ev.type, n,
                      more, exc_info=e)

    def wall_time_of(self, audio_s: float) -> float | None:
        """Wall-clock (monotonic) time at which the audio clock reached ``audio_s``."""
        cm = self._clock_map
        if not cm or audio_s > cm[-1][0]:
            return None
        lo, hi = 0, len(cm) - 1
        if audio_s <= cm[0][0]:
            return cm[0][1] - (cm[0][0] - audio_s)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if cm[mid][0] < audio_s:
                lo = mid
            else:
                hi = mid
        (a0, w0), (a1, w1) = cm[lo], cm[hi]
        f = (audio_s - a0) / (a1 - a0) if a1 > a0 else 0.0
        return w0 + f * (w1 - w0)

    def _record_latency(self, ev: Event) -> None:
        if not ev.sample_rate or ev.type.startswith("engine.") or ev.type == "control":
            return
        # an end of speech counts from where the speech ended, not from the end of its padding
        at = (getattr(ev, "speech_end_sample", 0) or ev.sample) / ev.sample_rate
        wall = self.wall_time_of(at)
        if wall is None:
            return
        d = self._latency.setdefault(ev.type, deque(maxlen=2000))
        # (wall latency, audio-clock latency): how far the audio clock had advanced at emission
        audio_now = self.audio_seconds
        d.append((ev.wall_time - wall, audio_now - at))

    # ------------------------------------------------------------------ statistics
    def stats(self) -> dict[str, Any]:
        """Run statistics: per node CPU per quantum, queues, drops, xruns, latency."""
        end = self._t_end or time.monotonic()
        wall = max(end - self._t_start, 1e-9) if self._t_start else 0.0
        startup = max(self._t_first - self._t_start, 0.0) if self._t_first else 0.0
        streamed_end = self._t_input_end or end  # the drain after it is not streaming
        streamed = max(streamed_end - self._t_start - startup, 1e-9) if self._t_start else 0.0
        nodes = {}
        for st in self._states:
            d: dict[str, Any] = {"type": st.decl.type, "thread": st.decl.thread}
            d.update({f"cpu_{k}": v for k, v in st.timing.summary().items()})
            d["flush_ms"] = round(st.flush_s * 1e3, 3)
            if st.queue is not None:
                d.update(queue_depth=len(st.queue), queue_max_depth=st.queue.max_depth,
                         queue_drops=st.queue.drops, queue_policy=st.queue.policy)
            d["errors"] = st.errors + st.reported  # raised, or reported as engine.node_error
            try:
                d.update(st.node.stats())
            except Exception:  # noqa: BLE001
                pass
            nodes[st.id] = d
        lat = {}
        # the dispatch thread adds event types and values while another thread asks: copy both
        # first (each copy is one C call, so no other thread runs during it)
        for typ, dq in list(self._latency.items()):
            vals = list(dq)
            w = np.array([v[0] for v in vals])
            a = np.array([v[1] for v in vals])
            lat[typ] = {"count": len(vals),
                        "wall_p50_s": round(float(np.percentile(w, 50)), 4),
                        "wall_p90_s": round(float(np.percentile(w, 90)), 4),
                        "audio_p50_s": round(float(np.percentile(a, 50)), 4),
                        "audio_p90_s": round(float(np.percentile(a, 90)), 4)}
        return {
            "graph": self.spec.name,
            "realtime": self.realtime,
            "quantum_ms": self.quantum_s * 1e3,
            "quanta": self.quanta,
            "audio_seconds": round(self.audio_seconds, 3),
            "wall_seconds": round(wall, 3),
            # until the first audio arrived (opening devices, loading models)
            "startup_seconds": round(startup, 3),
            # audio seconds per wall second once audio flowed, until the input ended
            "speed": round(self.audio_seconds / streamed, 2) if streamed else 0.0,
            # the nodes finishing their work after that (a speaker playing out its buffer)
            "drain_seconds": round(end - self._t_input_end, 3) if self._t_input_end else 0.0,
            "engine_overhead": self.overhead.summary(),
            "nodes": nodes,
            "events": dict(self.event_counts),
            "latency": lat,
        }


def _describe_source(n: Any) -> str:
    """What a source node reads, in a few words (for logs): a file's path, a device, a feed."""
    path = getattr(n.params, "path", None)
    if path:
        return str(path)
    device = getattr(n.params, "device", None)
    kind = n.type.split(".", 1)[-1]
    return f"{kind} {device}" if device is not None else kind


def process(graph: str | Path | GraphSpec, audio: Any, rate: int | None = None,
            params: dict[str, dict[str, Any]] | None = None) -> dict[str, np.ndarray]:
    """Offline, as fast as possible, like an effect chain: ``audio`` (a NumPy array as
    :meth:`Engine.feed` takes it; ``rate`` its sample rate when it is not the graph's) goes in
    where the graph's ``source.microphone`` is, and what each ``sink.array`` node collected
    comes back, by node id. Events go to the graph's own sinks as usual.

    >>> out = process("chain.toml", x, rate=44100)["out"]   # doctest: +SKIP
    """
    spec = graph if isinstance(graph, GraphSpec) else load_graph(graph, params)
    if not any(n.type == "source.microphone" for n in spec.nodes):
        raise EngineError("process(): the graph needs a source.microphone; the array is fed "
                          "in its place (its sample_rate and channels say the graph's format)")
    eng = Engine(spec, input="feed", realtime=False)
    sinks = [st for st in eng._states if st.decl.type == "sink.array"]
    if not sinks:
        raise EngineError("process(): the graph has no sink.array node to collect the output "
                          "(add one: [[nodes]] id = \"out\", type = \"sink.array\", "
                          "in = { audio = \"...\" })")
    eng.start()
    try:
        eng.feed(audio, rate=rate)
        eng.end_feed()
        eng.wait()
    finally:
        eng.stop()
    if eng.error is not None:
        raise eng.error
    for st in sinks:
        if st.node.frames_over_max_s:  # type: ignore[attr-defined]
            log.warning("process(): %s kept only its first %g s (max_s); %d frames dropped",
                        st.id, st.node.params.max_s, st.node.frames_over_max_s)  # type: ignore
    return {st.id: st.node.audio for st in sinks}  # type: ignore[attr-defined]


def known_event_types() -> set[str]:
    """Every event type defined so far (``Event`` subclasses, built-in and from plugins)."""
    out: set[str] = set()
    todo = [Event]
    while todo:
        cls = todo.pop()
        out.add(cls.type)
        todo.extend(cls.__subclasses__())
    out.add("engine.callback_error")  # counted in stats(), not delivered
    return out


def _safe_close(node: Node) -> None:
    try:
        node.close()
    except Exception:  # noqa: BLE001
        pass


def _substitute_sources(spec: GraphSpec, input: str | Path | None, device, output_device,
                        backend, loop: bool, feed_idle_s: float = 0.0,
                        raw: dict[str, Any] | None = None) -> GraphSpec:
    """Replace microphones by a file or feed source; apply device / backend overrides."""
    types_ = node_types()
    nodes = []
    for n in spec.nodes:
        if n.type == "source.microphone":
            p = n.params
            if input == "feed":
                cls = types_["source.feed"]
                params = build_or_raise(cls, {"sample_rate": p.sample_rate,
                                              "channels": p.channels,
                                              "idle_fill_s": feed_idle_s}, n.id)
                n = replace(n, type=cls.type_name, cls=cls, params=params)
            elif input is not None:
                # the graph gets the rate its microphone declared (a sound server resamples a
                # device likewise), except where only resamplers take the audio: they adapt
                # to the file's rate, and one resampling beats two
                takers = {spec.node(t).type for t in spec.takers()[n.id]}
                rate = 0 if takers <= {"dsp.resample"} else p.sample_rate
                cls = types_["source.file"]
                params = build_or_raise(cls, {"path": str(input), "loop": loop,
                                              "channels": p.channels, "sample_rate": rate,
                                              **(raw or {})}, n.id)
                n = replace(n, type=cls.type_name, cls=cls, params=params)
            else:
                n = _device_overrides(n, device, backend, spec.settings.backend)
        elif n.type == "sink.speaker":
            n = _device_overrides(n, output_device, backend, spec.settings.backend)
        nodes.append(n)
    return replace(spec, nodes=tuple(nodes))


def _device_overrides(n: NodeDecl, device, backend: str | None, graph_backend: str) -> NodeDecl:
    """A microphone's or speaker's device and backend from the caller (``--device``,
    ``--backend``), else the backend from the graph's ``[engine]`` table where the node keeps
    the default."""
    p = n.params
    kw: dict[str, Any] = {}
    if device is not None:
        kw["device"] = str(device)
    if backend is not None:
        kw["backend"] = backend
    elif graph_backend != "sounddevice" and p.backend == "sounddevice":
        kw["backend"] = graph_backend
    return replace(n, params=replace(p, **kw)) if kw else n


def build_or_raise(cls: type[Node], raw: dict[str, Any], nid: str) -> Any:
    problems: list[str] = []
    p = build_params(cls, raw, f"nodes[{nid}].params", problems)
    if problems:
        raise GraphError(nid, problems)
    return p
