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
        self.written = 0

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        return {}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        if self.params.path == "-":
            self._out = sys.stdout
            return
        p = Path(self.params.path)
        why = unwritable(p)
        if why:
            raise EngineError(f"{p}: cannot open event log for writing: {why}")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            self._out = open(p, "a", encoding="utf-8")
        except OSError as e:
            raise EngineError(f"{p}: cannot open event log for writing: {e.strerror}") from None
        started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self._out.write(json.dumps({"type": "session.started", "time_s": 0.0, "sample": 0,
                                    "node": self.id, "started_at": started}) + "\n")
        self._out.flush()

    def _wanted(self, t: str) -> bool:
        p = self.params
        return any(fnmatch.fnmatchcase(t, pat) for pat in p.include) and \
            not any(fnmatch.fnmatchcase(t, pat) for pat in p.exclude)

    def process(self, io: NodeIO) -> None:
        out = self._out
        if out is None:
            return
        n = 0
        for ev in io.events("events"):
            if self._wanted(ev.type):
                out.write(json.dumps(ev.to_dict(), ensure_ascii=False, default=str) + "\n")
                n += 1
        if n:
            out.flush()
            self.written += n

    def close(self) -> None:
        if self._out is not None and self._out is not sys.stdout:
            self._out.close()
        self._out = None

    def stats(self) -> dict:
        return {"events_written": self.written,
                "files": [self.params.path] if self.params.path != "-" else []}
