"""``source.playback``: audio the application plays (``Engine.play``), e.g. an assistant's reply.

Wire it to a speaker (``in = { audio = "reply.audio" }`` on a ``sink.speaker``); the graph's
microphone keeps the clock, this source follows it and never holds the run open (a run ends
when its microphone, file or feed does). In a graph with no other source it gives the clock
itself (the wall clock's pace) and the run goes on until ``Engine.stop()`` or ``max_seconds``.
``Engine.play(x, rate)`` queues a clip and returns its
id at once; clips play one after the other without gaps; ``Engine.stop_playback()`` cuts the
current clip within one quantum (10 ms) with a ``fade_ms`` fade, so it does not click, and drops
the queued ones (a barge-in). Each clip gives ``playback.started``, then ``playback.finished`` or
``playback.interrupted`` (``reason`` ``"stopped"``, or ``"ended"`` when the stream ended
first: the engine's drain flushes this source), stamped on this node's clock (the graph's, at
its rate). A clip dropped before it started gives only ``playback.interrupted``.

Real-time rules: ``Engine.play`` converts the clip (dtype, channels, rate through the engine's
streaming resampler) on the caller's thread and posts it to a mailbox (a ``collections.deque``:
append / popleft are atomic, nobody waits); ``process`` on the DSP thread only slices and copies
into the preallocated output (a multiply into it during a fade), emits the events, and hands
clips it is done with back to the callers' threads to be freed there (JUCE frees the old graph
off the audio thread likewise): the next ``play`` / ``stop_playback`` frees them, ``close``
those left at the end. At most ``max_clips`` clips may wait; ``play`` beyond that raises rather
than letting memory grow.

Threads: ``play`` and ``stop_playback`` may come from any threads at once (the main thread
and an event callback, say). ``submit``'s bookkeeping (the id, the count, the post) is under a
lock that only callers take, and the DSP thread only once: at ``flush``, the end of the stream,
to close the mailbox, so that a clip is either in it before the drain reads it (and gets its
``"ended"`` event) or refused (``EngineError``), never lost without an event. ``process`` takes
no lock.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import EngineError
from ..events import PlaybackFinished, PlaybackInterrupted, PlaybackStarted
from ..node import AUDIO, EVENTS, AudioSpec, Node, NodeIO, param, register
from ..pcm import MAX_RATE, MIN_RATE


class _Clip:
    __slots__ = ("id", "x", "pos", "start")

    def __init__(self, clip_id: int, x: np.ndarray):
        self.id = clip_id
        self.x = x
        self.pos = 0  # frames played
        self.start = -1  # sample where it began (-1: not yet)


@register
class Playback(Node):
    """Plays what the application gives ``Engine.play(array, rate)`` (an assistant's reply),
    clip after clip; ``Engine.stop_playback()`` cuts it within a quantum, with a fade (a
    barge-in). Wire ``audio`` to a ``sink.speaker``, ``events`` (``playback.started`` /
    ``finished`` / ``interrupted``) to a VAD's ``mute`` port to keep the reply's echo out of
    the recogniser. Follows the graph's clock: the run ends when its other sources do (alone
    in a graph, it runs until stopped)."""

    type_name = "source.playback"
    outputs = {"audio": AUDIO, "events": EVENTS}
    is_source = True
    holds_run = False

    @dataclass(frozen=True)
    class Params:
        sample_rate: int = param(48000, ge=MIN_RATE, le=MAX_RATE,
                                 doc="output rate (the speaker's); clips at other rates are "
                                     "resampled")
        channels: int = param(1, gt=0, le=64, doc="output channels (a mono clip is copied to "
                                                  "each)")
        fade_ms: float = param(5.0, ge=0, le=100, doc="fade-out when stop_playback() cuts a "
                                                      "clip (0: hard cut)")
        max_clips: int = param(32, gt=0, le=10000, doc="clips queued at once (the one "
                                                       "playing and those waiting)")

    def __init__(self, node_id: str, params: Params):
        super().__init__(node_id, params)
        self._mail: deque[tuple[str, _Clip | None]] = deque()  # caller -> DSP thread
        self._retired: deque[_Clip] = deque()  # DSP thread -> caller (freed there)
        self._queue: deque[_Clip] = deque()  # DSP thread only
        self._cur: _Clip | None = None
        self._fade_left = -1  # frames of fade still to go (-1: not fading)
        self._fade_total = 0  # frames of the fade under way (the ramp's length)
        self._lock = threading.Lock()  # callers' bookkeeping; the DSP thread: at flush only
        self._closed = False  # under _lock: the stream has ended, no clip is taken
        self._next_id = 1  # under _lock
        self._submitted = 0  # under _lock: clips posted
        self._ended = 0  # DSP side: clips finished or interrupted
        self.counts = {"clips_finished": 0, "clips_interrupted": 0, "frames_played": 0}

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        p = self.params
        return {"audio": AudioSpec(p.sample_rate, p.channels,
                                   math.ceil(p.sample_rate * self.quantum_s) + 1)}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        self._fade_len = int(round(self.params.fade_ms * self.params.sample_rate / 1000))
        n = max(self._fade_len, 1)
        self._steps = np.arange(1, n + 1, dtype=np.float32)[:, None]  # 1..n
        self._ramp = np.empty((n, 1), np.float32)  # the fade under way, set by _interrupt

    # -- the application's threads (any, several at once)
    @property
    def pending(self) -> int:
        """Clips posted and not yet finished or interrupted."""
        return self._submitted - self._ended

    def submit(self, x: np.ndarray) -> int:
        """Queue ``x`` (float32, frames x channels, at the node's rate and channels); returns
        the clip's id. Any thread; raises :class:`EngineError` once the stream has ended.
        Frees the clips the DSP thread is done with."""
        if x.ndim != 2 or x.shape[1] != self.params.channels or x.dtype != np.float32:
            raise EngineError(f"{self.id}: a clip must be float32 frames x "
                              f"{self.params.channels}, got {x.dtype} {x.shape}")
        self._retired.clear()  # frees them here, outside the lock
        x = np.ascontiguousarray(x)
        with self._lock:
            if self._closed:
                raise EngineError(f"play(): the stream has ended: '{self.id}' plays nothing "
                                  "more (an Engine runs once: create a new one)")
            if self.pending >= self.params.max_clips:
                raise EngineError(f"play(): {self.pending} clips are waiting on '{self.id}' "
                                  f"(max_clips = {self.params.max_clips}): wait for "
                                  "playback.finished, call stop_playback(), or raise max_clips")
            clip = _Clip(self._next_id, x)
            self._next_id += 1
            self._submitted += 1
            self._mail.append(("play", clip))
        return clip.id

    def interrupt(self) -> None:
        """Cut the playing clip (with a fade) and drop the waiting ones, at the next quantum.
        Any thread; after the end of the stream it does nothing."""
        self._retired.clear()
        if not self._closed:
            self._mail.append(("stop", None))

    # -- the DSP thread
    def _retire(self, clip: _Clip) -> None:
        self._ended += 1
        self._retired.append(clip)

    def _interrupt(self, io: NodeIO, at: int, reason: str = "stopped") -> None:
        rate = self.params.sample_rate
        for clip in self._queue:  # waiting clips end here without a sound
            io.emit("events", PlaybackInterrupted(at, rate, self.id, clip=clip.id,
                                                  frames=len(clip.x), reason=reason))
            self.counts["clips_interrupted"] += 1
            self._retire(clip)
        self._queue.clear()
        if self._cur is not None and self._fade_left < 0:
            # fade from full volume to 0 over fade_ms, or over what is left of the clip if
            # that is shorter (a full ramp's tail would start near 0: the click a fade avoids)
            m = min(self._fade_len, len(self._cur.x) - self._cur.pos)
            if m:
                r = self._ramp[:m]
                np.divide(self._steps[:m], np.float32(m), out=r)
                np.subtract(np.float32(1), r, out=r)
            self._fade_total = self._fade_left = m

    def _end_current(self, io: NodeIO, at: int, interrupted: bool,
                     reason: str = "stopped") -> None:
        c = self._cur
        assert c is not None
        rate = self.params.sample_rate
        if interrupted:
            io.emit("events", PlaybackInterrupted(at, rate, self.id, clip=c.id, frames=len(c.x),
                                                  played=c.pos, start_sample=c.start,
                                                  reason=reason))
            self.counts["clips_interrupted"] += 1
        else:
            io.emit("events", PlaybackFinished(at, rate, self.id, clip=c.id, frames=len(c.x),
                                               start_sample=c.start))
            self.counts["clips_finished"] += 1
        self._retire(c)
        self._cur = None
        self._fade_left = -1

    def _read_mail(self, io: NodeIO, at: int) -> None:
        while self._mail:
            kind, clip = self._mail.popleft()
            if kind == "play":
                self._queue.append(clip)  # type: ignore[arg-type]
            else:
                self._interrupt(io, at)

    def flush(self, io: NodeIO) -> None:
        """End of stream: the clip playing and those waiting end as ``playback.interrupted``
        with ``reason = "ended"`` (so an application waiting for a clip's end never hangs)."""
        at = io.start.get("audio", 0)
        with self._lock:  # after this no clip enters the mailbox: the drain sees them all
            self._closed = True
        self._read_mail(io, at)
        self._fade_left = -1
        self._interrupt(io, at, "ended")
        if self._cur is not None:
            self._end_current(io, at, interrupted=True, reason="ended")

    def process(self, io: NodeIO) -> None:
        out = io.out("audio")
        n = min(io.frames, len(out))
        at = io.start.get("audio", 0)
        rate = self.params.sample_rate
        self._read_mail(io, at)
        o = 0
        while o < n:
            c = self._cur
            if c is None:
                if not self._queue:
                    break
                c = self._cur = self._queue.popleft()
                c.start = at + o
                io.emit("events", PlaybackStarted(at + o, rate, self.id, clip=c.id,
                                                  frames=len(c.x)))
            if self._fade_left == 0:
                self._end_current(io, at + o, interrupted=True)
                continue
            if self._fade_left > 0:  # fading out: multiply by the rest of the ramp
                k = min(n - o, self._fade_left)
                r = self._fade_total - self._fade_left
                np.multiply(c.x[c.pos:c.pos + k], self._ramp[r:r + k], out=out[o:o + k])
                self._fade_left -= k
            else:
                k = min(n - o, len(c.x) - c.pos)
                out[o:o + k] = c.x[c.pos:c.pos + k]
            c.pos += k
            o += k
            self.counts["frames_played"] += k
            if self._fade_left == 0:
                self._end_current(io, at + o, interrupted=True)
            elif c.pos >= len(c.x):
                self._end_current(io, at + o, interrupted=False)
        out[o:n] = 0
        io.produced("audio", n)

    def close(self) -> None:
        """End of the engine (also without a drain): take no more clips, free those held."""
        with self._lock:
            self._closed = True
        self._mail.clear()
        self._queue.clear()
        self._retired.clear()
        self._cur = None

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "clips_pending": self.pending}
