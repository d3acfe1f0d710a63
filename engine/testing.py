"""Test helpers shipped with the package (as Pipecat does): feed audio in, get events out.

``make_node`` builds a node with its parameters checked as a graph file's are; ``run_node``
drives a single node through its real lifecycle (negotiate, prepare, process in blocks, flush)
without audio hardware, so a node's behaviour can be checked for any block size.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import EngineError, GraphError
from .events import Event
from .graph import _check_range, node_params, unknown_type
from .node import AUDIO, AudioSpec, Node, NodeIO, negotiate_problem, node_types, produced_nothing


@dataclass
class NodeRun:
    audio: dict[str, np.ndarray] = field(default_factory=dict)
    events: dict[str, list[Event]] = field(default_factory=dict)
    specs: dict[str, AudioSpec] = field(default_factory=dict)


def make_node(node_type: str | type[Node], id: str = "node", **params: Any) -> Node:
    """A node of ``node_type`` (a registered type name such as ``"dsp.gain"``, or the class)
    with id ``id`` and ``params`` checked exactly as a graph file's are: unknown names,
    types, ranges, the node's own checks. Raises :class:`~engine.errors.GraphError` listing
    every problem (``make_node("dsp.gain", db=500)``: ``nodes[node].params.db: must be <= 60,
    got 500``)."""
    if isinstance(node_type, str):
        registry = node_types()
        if node_type not in registry:
            raise GraphError(f"make_node({node_type!r})", [unknown_type(node_type, registry)],
                             "in its type")
        cls = registry[node_type]
    else:
        cls = node_type
    problems: list[str] = []
    p = node_params(cls, params, f"nodes[{id}]", problems)
    if problems:
        raise GraphError(f"make_node({cls.type_name!r})", problems, "in its parameters")
    return cls(id, p)


def _check_params(node: Node) -> None:
    """The checks a graph file's parameters get that a hand-built node's can miss: a dict in
    place of the Params dataclass, a value out of its declared range."""
    P = type(node).Params
    if isinstance(node.params, dict):
        raise TypeError(f"{node.id}: params is a dict, not {type(node).__name__}.Params: build "
                        f"the node with engine.testing.make_node({node.type_name!r}, "
                        f"id={node.id!r}, **params)")
    if not dataclasses.is_dataclass(node.params) or not isinstance(node.params, P):
        return
    problems = [f"nodes[{node.id}].params.{f.name}: {err}" for f in dataclasses.fields(P)
                if (err := _check_range(getattr(node.params, f.name), f.metadata))]
    if problems:
        raise GraphError(f"run_node({node.id})", problems, "in its parameters")


def run_node(node: Node, audio: np.ndarray | dict[str, np.ndarray] | None, sample_rate: int,
             block: int | Sequence[int], events: dict[str, list[Event]] | None = None,
             port: str = "audio", flush: bool = True,
             controls: dict[int, dict] | None = None) -> NodeRun:
    """Push ``audio`` (frames x channels, or 1-D) through ``node`` in blocks of ``block`` frames,
    or of the sizes in a sequence, cycled (``[0, 1, 480, 17]``: irregular blocks, empty ones
    included, as a resampler upstream delivers them; the node is prepared for the largest).
    ``audio`` goes to input ``port``; a node with several audio inputs takes a dict
    ``{port: array}`` (arrays of the same length, cut into the same blocks).

    ``events`` maps input event ports to events; each is delivered in the block containing its
    ``sample``. ``controls`` maps block numbers (0 = the first) to ``node.control(values)``
    calls made before that block, as the runtime makes them between blocks. Returns all audio
    produced per output port and all events per output port.

    Checked as loading a graph checks them: ``node.params`` (a dict instead of ``Params``, a
    value out of range: build nodes with :func:`make_node`) and what ``negotiate`` returns
    (:class:`~engine.errors.EngineError`). Like the engine, it never calls ``reset()``. A node
    that took audio and, flushed, produced none on an audio output gets a ``UserWarning``
    (does its ``process`` call ``io.produced``?), as the engine logs one at the end of a run.
    """
    _check_params(node)
    sizes = [block] if isinstance(block, int) else list(block)
    if not sizes or max(sizes) < 1 or min(sizes) < 0:
        raise ValueError(f"block: a size >= 1 or a sequence of sizes >= 0 with one >= 1, "
                         f"got {block!r}")
    block = max(sizes)
    in_specs: dict[str, AudioSpec] = {}
    inputs: dict[str, np.ndarray] = {}
    if audio is not None:
        for p, a in (audio.items() if isinstance(audio, dict) else [(port, audio)]):
            a = np.ascontiguousarray(a[:, None] if a.ndim == 1 else a, dtype=np.float32)
            inputs[p] = a
            in_specs[p] = AudioSpec(sample_rate, a.shape[1], block)
        if len({len(a) for a in inputs.values()}) > 1:
            raise ValueError("audio: the input arrays must have the same length, got "
                             + ", ".join(f"{p} {len(a)}" for p, a in inputs.items()))
    out_specs = node.negotiate(in_specs)
    bad = negotiate_problem(node, in_specs, out_specs)
    if bad:
        raise EngineError(f"nodes[{node.id}] ({node.type_name}): {bad}")
    specs = {**in_specs, **out_specs}
    node.prepare(specs)
    outs = {p: np.zeros((s.max_block, s.channels), np.float32) for p, s in out_specs.items()}
    ev_ports = [p for p, k in node.outputs.items() if k != AUDIO]
    io = NodeIO(node.id, outs, ev_ports)
    result = NodeRun(specs=specs)
    collected: dict[str, list[np.ndarray]] = {p: [] for p in outs}
    result.events = {p: [] for p in ev_ports}
    pending = sorted(((p, e) for p, evs in (events or {}).items() for e in evs),
                     key=lambda pe: pe[1].sample)

    def collect() -> None:
        for p in outs:
            n = io._produced[p]
            if n:
                collected[p].append(outs[p][:n].copy())
            io._produced[p] = 0
        for p in ev_ports:
            result.events[p].extend(io._events_out[p])
            io._events_out[p].clear()

    total = len(next(iter(inputs.values()))) if inputs else 0
    pos = 0
    k = 0
    while pos < total or (audio is None and pending):
        size = sizes[k % len(sizes)] if audio is not None else block
        end = min(pos + size, total) if audio is not None else pos + block
        io._in = {p: a[pos:end] for p, a in inputs.items()}
        io.start = {p: pos for p in inputs} or {port: pos}
        evin: dict[str, list[Event]] = {}
        while pending and (pending[0][1].sample < end or audio is None):
            p, e = pending.pop(0)
            evin.setdefault(p, []).append(e)
        io._events_in = evin
        if controls and k in controls:
            node.control(controls[k])
        node.process(io)
        collect()
        k += 1
        pos = end
    if flush:  # as the runtime does: empty blocks on the audio inputs
        io._in = {p: a[:0] for p, a in inputs.items()}
        io._events_in = {}
        io.stream_seconds = total / sample_rate if audio is not None else None
        node.flush(io)
        collect()
    result.audio = {
        p: (np.concatenate(c) if c else np.zeros((0, outs[p].shape[1]), np.float32))
        for p, c in collected.items()
    }
    for p, a in result.audio.items():
        msg = produced_nothing(node, p, total / sample_rate, len(a)) if flush else ""
        if msg:
            warnings.warn(msg, stacklevel=2)
    return result
