"""``sink.events``: every event it receives as JSON Lines, to stdout or a file.

A file is appended to, so a monitor that restarts keeps its history; each run opens with a
``{"type": "session.started", "started_at": "<UTC ISO 8601>", ...}`` line, after which
``time_s`` and ``sample`` count from 0 again."""

from __future__ import annotations

import fnmatch
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from ..errors import EngineError
from ..node import EVENTS, AudioSpec, Node, NodeIO, param, register, unwritable


@register
class EventsSink(Node):
    """One JSON object per line (the schema of :meth:`engine.events.Event.to_dict`), written on
    a worker thread; ``include`` filters by type pattern (``["transcript.*"]``)."""

    type_name = "sink.events"
    inputs = {"events": EVENTS}
    thread = "worker"
    queue_policy = "block"
    queue_size = 10000

    @dataclass(frozen=True)
    class Params:
        path: str = param("-", doc="file to append to; '-' for standard output")
        include: list[str] = param(["*"], doc="event type patterns to write")
        exclude: list[str] = param(["vad.probability", "sound.scores"],
                                   doc="event type patterns to leave out")

    def __init__(self, node_id: str, params: Params):
        super().__init__(node_id, params)
        self._out: TextIO | None = None
        self._failed = False  # the file could not be opened (reported once)
        self._started_at = ""
        self.written = 0

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        return {}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        self._started_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        if self.params.path == "-":
            self._out = sys.stdout
            return
        why = unwritable(self.params.path)  # the file is opened when the stream runs, so a
        if why:  # graph that fails to start leaves no line behind
            raise EngineError(f"{self.params.path}: cannot open event log for writing: {why}")

    def _open(self) -> TextIO:
        """The log file, opened for appending, with a ``session.started`` line first that says
        when, which graph and what it listened to. Raises OSError."""
        p = Path(self.params.path)
        p.parent.mkdir(parents=True, exist_ok=True)
        out = open(p, "a", encoding="utf-8")
        out.write(json.dumps({"type": "session.started", "time_s": 0.0, "sample": 0,
                              "node": self.id, "started_at": self._started_at,
                              **(self.engine_session or {})}, ensure_ascii=False) + "\n")
        out.flush()
        return out

    def _wanted(self, t: str) -> bool:
        p = self.params
        return any(fnmatch.fnmatchcase(t, pat) for pat in p.include) and \
            not any(fnmatch.fnmatchcase(t, pat) for pat in p.exclude)

    def process(self, io: NodeIO) -> None:
        if self._out is None:
            if self._failed:
                return
            try:
                self._out = self._open()
            except OSError as e:  # (checked in prepare: the folder went away since)
                self._failed = True  # reported once, as the node's error; the run goes on
                raise EngineError(f"{self.params.path}: cannot open event log for writing: "
                                  f"{e.strerror or e}") from None
        out = self._out
        n = 0
        for ev in io.events("events"):
            if self._wanted(ev.type):
                out.write(json.dumps(ev.to_dict(), ensure_ascii=False, default=str) + "\n")
                n += 1
        if n:
            out.flush()
            self.written += n

    def flush(self, io: NodeIO) -> None:
        self.process(io)  # a run without events still leaves its session.started line

    def close(self) -> None:
        if self._out is not None and self._out is not sys.stdout:
            self._out.close()
        self._out = None

    def stats(self) -> dict:
        return {"events_written": self.written,
                "files": [self.params.path] if self.params.path != "-" else []}
