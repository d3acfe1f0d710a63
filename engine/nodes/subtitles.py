"""``sink.subtitles``: SRT and WebVTT files with audio-clock times.

Cues follow common subtitle rules: at most ``max_lines`` lines of ``max_chars`` characters and
between ``min_s`` and ``max_s`` seconds on screen. A final too long for one cue is split at word
boundaries; with word timestamps each cue takes its words' times, otherwise the final's time span
is shared out in proportion to the characters of each cue.

Files are written at the first caption and updated after each final with only what changed: the
new cues and the last one before them (its end may still move: shortened when the next caption
starts earlier, clamped to the end of the audio at the end of the stream), written over the old
last cue in one ``write`` call. The cost per caption does not grow with the session (rewriting
whole files made a day of captions cost 7 GB of writes), and a reader sees whole cues. A file
removed or cut short while the engine runs (log rotation) is written again in full.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

from ..errors import EngineError
from ..events import TranscriptFinal
from ..node import EVENTS, AudioSpec, Node, NodeIO, param, register, unwritable


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]


def _ts(t: float, sep: str) -> str:
    ms = int(round(max(t, 0.0) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def srt_cues(cues: list[Cue], first: int = 1) -> str:
    """SRT text of ``cues``, numbered from ``first``."""
    return "".join(f"{i}\n{_ts(c.start, ',')} --> {_ts(c.end, ',')}\n" + "\n".join(c.lines)
                   + "\n\n" for i, c in enumerate(cues, first))


def vtt_cues(cues: list[Cue], first: int = 1) -> str:
    """WebVTT text of ``cues`` (no header; cues are not numbered)."""
    return "".join(f"{_ts(c.start, '.')} --> {_ts(c.end, '.')}\n" + "\n".join(c.lines)
                   + "\n\n" for c in cues)


#: (header, cues) of each format
FORMATS = {"srt": ("", srt_cues), "vtt": ("WEBVTT\n\n", vtt_cues)}


def to_srt(cues: list[Cue]) -> str:
    return srt_cues(cues)


def to_vtt(cues: list[Cue]) -> str:
    return FORMATS["vtt"][0] + vtt_cues(cues)


def split_text(words: list[str], max_chars: int, max_lines: int) -> list[list[str]]:
    """Words into as few cues as fit ``max_lines`` lines of ``max_chars``, as even in length as
    possible (no one-word orphan cue after a full one): the fewest chunks a greedy fill needs,
    then the split into that many fitting chunks with the least sum of squared lengths."""
    n = len(words)
    fits: dict[tuple[int, int], bool] = {}

    def fit(i: int, j: int) -> bool:
        if (i, j) not in fits:
            fits[(i, j)] = j - i == 1 or \
                len(textwrap.wrap(" ".join(words[i:j]), max_chars)) <= max_lines
        return fits[(i, j)]

    k, i = 0, 0
    while i < n:  # greedy: the fewest chunks
        j = i + 1
        while j < n and fit(i, j + 1):
            j += 1
        k, i = k + 1, j
    inf = float("inf")
    cost = [[inf] * (n + 1) for _ in range(k + 1)]
    back = [[0] * (n + 1) for _ in range(k + 1)]
    cost[0][0] = 0.0
    for c in range(1, k + 1):
        for j in range(1, n + 1):
            for i in range(j - 1, -1, -1):
                if not fit(i, j):
                    break  # a chunk starting earlier is longer still
                v = cost[c - 1][i] + len(" ".join(words[i:j])) ** 2
                if v < cost[c][j]:
                    cost[c][j], back[c][j] = v, i
    out, j = [], n
    for c in range(k, 0, -1):
        i = back[c][j]
        out.append(words[i:j])
        j = i
    return out[::-1]


def make_cues(text: str, start: float, end: float, words=(), max_chars: int = 42,
              max_lines: int = 2, min_s: float = 1.0, max_s: float = 7.0) -> list[Cue]:
    """Split one final into cues that respect the line, length and duration limits."""
    chunks = split_text(text.split(), max_chars, max_lines)
    if not chunks:
        return []
    total_chars = sum(len(" ".join(c)) for c in chunks)
    cues = []
    t = start
    wi = 0
    for c in chunks:
        if words and len(words) >= wi + len(c):
            c_start, c_end = words[wi][1], words[wi + len(c) - 1][2]
            wi += len(c)
        else:
            span = (end - start) * len(" ".join(c)) / max(total_chars, 1)
            c_start, c_end = t, t + span
            t = c_end
        cues.append([c_start, c_end, tuple(textwrap.wrap(" ".join(c), max_chars))])
    # durations: split overlong cues' time, stretch short ones into the following gap
    out: list[Cue] = []
    for i, (s, e, lines) in enumerate(cues):
        e = min(e, s + max_s)
        if e - s < min_s:
            nxt = cues[i + 1][0] if i + 1 < len(cues) else s + min_s
            e = max(e, min(s + min_s, max(nxt, e)))
        out.append(Cue(round(s, 3), round(max(e, s + 0.001), 3), lines))
    return out


def _replace(path: Path, text: bytes) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``: a player
    or editor that reads the file meanwhile sees the old or the new version, never an empty
    or half-written one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(text)
    os.replace(tmp, path)


@register
class SubtitlesSink(Node):
    """Writes ``srt`` and/or ``vtt`` files from ``transcript.final`` events."""

    type_name = "sink.subtitles"
    inputs = {"events": EVENTS}
    thread = "worker"
    queue_policy = "block"
    queue_size = 1000

    @dataclass(frozen=True)
    class Params:
        srt: str = param("", doc="SRT file to write ('' for none)")
        vtt: str = param("", doc="WebVTT file to write ('' for none)")
        max_chars: int = param(42, ge=10, le=100, doc="characters per line")
        max_lines: int = param(2, ge=1, le=4, doc="lines per cue")
        min_s: float = param(1.0, ge=0, doc="shortest cue duration")
        max_s: float = param(7.0, gt=0, doc="longest cue duration")

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        return {}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        """Check that the files can be written; they are written at the first caption (or
        empty at the end of a stream without any), so a run that fails to start leaves the
        last run's subtitles alone."""
        self.cues: list[Cue] = []
        self._written = False
        #: per file: (cues that can no longer change, bytes they take in the file)
        self._fixed: dict[str, tuple[int, int]] = {}
        self.bytes_written = 0
        for path in (self.params.srt, self.params.vtt):
            why = unwritable(path) if path else None
            if why:
                raise EngineError(f"{path}: cannot write subtitles: {why}")

    def process(self, io: NodeIO) -> None:
        p = self.params
        changed = False
        for ev in io.events("events"):
            if isinstance(ev, TranscriptFinal) and ev.text.strip():
                r = ev.sample_rate
                new = make_cues(ev.text, ev.start_sample / r, ev.sample / r, ev.words,
                                p.max_chars, p.max_lines, p.min_s, p.max_s)
                if self.cues and new and new[0].start < self.cues[-1].end:
                    last = self.cues[-1]
                    self.cues[-1] = Cue(last.start, max(last.start + 0.001, new[0].start),
                                        last.lines)
                self.cues.extend(new)
                changed = True
        if changed:
            self._write()

    def _write(self) -> None:
        self._written = True
        p = self.params
        for path, fmt in ((p.srt, "srt"), (p.vtt, "vtt")):
            if path:
                self._update(Path(path), fmt)

    def _update(self, path: Path, fmt: str) -> None:
        """Write the cues after the fixed ones over the file's tail (all of it the first time,
        or when the file was removed or cut short meanwhile)."""
        head, body = FORMATS[fmt]
        cues = self.cues
        k, off = self._fixed.get(fmt, (0, -1))
        try:
            whole = off < 0 or path.stat().st_size < off
        except OSError:
            whole = True
        if whole:
            k, off = 0, len(head.encode())
        n = max(len(cues) - 1, k)  # every cue but the last is fixed after this write
        fixed = body(cues[k:n], k + 1).encode()
        text = fixed + body(cues[n:], n + 1).encode()
        if whole:
            text = head.encode() + text
            _replace(path, text)
        else:
            with open(path, "r+b") as f:
                f.seek(off)
                f.write(text)
                f.truncate()
        self.bytes_written += len(text)
        self._fixed[fmt] = (n, off + len(fixed))

    def flush(self, io: NodeIO) -> None:
        """End of stream: no cue may end after the audio (the last one may have been
        stretched to ``min_s`` past its speech)."""
        self.process(io)
        end = io.stream_seconds
        if end is not None and self.cues and self.cues[-1].end > end:
            last = self.cues[-1]
            self.cues[-1] = Cue(last.start, round(max(end, last.start + 0.001), 3), last.lines)
            self._write()
        elif not self._written:
            self._write()  # no caption at all: empty, valid files

    def stats(self) -> dict:
        return {"cues": len(getattr(self, "cues", [])),
                "bytes_written": getattr(self, "bytes_written", 0),
                "files": [f for f in (self.params.srt, self.params.vtt) if f]}
