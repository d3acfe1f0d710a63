"""Events: small frozen dataclasses stamped on the audio clock.

Every event carries ``sample`` (absolute index of the sample at which it happened, counted on the
clock of ``sample_rate``), so latency can be measured on the audio clock as well as the wall clock
(``wall_time`` is ``time.monotonic()`` when the event was emitted). ``type`` is the dotted name
used by subscribers (``eng.on("transcript.final", cb)``) and in JSON Lines output.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class Event:
    """Base class: one thing that happened at ``sample`` on the audio clock."""

    type: ClassVar[str] = "event"
    sample: int
    sample_rate: int
    node: str = ""
    wall_time: float = field(default_factory=time.monotonic, compare=False)

    @property
    def time_s(self) -> float:
        """Seconds since the start of the stream, on the audio clock."""
        return self.sample / self.sample_rate if self.sample_rate else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the schema used by ``sink.events`` and the web API)."""
        d: dict[str, Any] = {"type": self.type, "time_s": round(self.time_s, 4)}
        for f in dataclasses.fields(self):
            if f.name == "wall_time" or not f.metadata.get("json", True):
                continue
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = [[_plain(y) for y in x] if isinstance(x, tuple) else _plain(x) for x in v]
            d[f.name] = _plain(v)
        return d


def _plain(v: Any) -> Any:
    """A NumPy scalar (``np.float32(0.15)`` from a node's arithmetic) as the Python number it
    holds, so JSON gets ``0.15``, not the string ``"0.15"``; anything else unchanged."""
    return v.item() if isinstance(v, np.generic) else v


@dataclass(frozen=True)
class SpeechStarted(Event):
    """Speech began at ``sample`` (``speech_pad_ms`` of pre-roll included). Emitted once
    ``min_speech_ms`` of speech confirmed it, so it arrives that much (plus a window) later;
    ``probability`` is the VAD's score of the window that opened it."""

    type: ClassVar[str] = "vad.speech_started"
    probability: float = 0.0


@dataclass(frozen=True)
class SpeechStopped(Event):
    """Speech ended: ``[start_sample, sample)`` is the segment, ``speech_pad_ms`` of padding
    included on both sides (what the VAD's ``speech`` port carries); ``speech_end_sample`` is
    where the speech itself stopped (``sample`` less the end padding). Emitted once
    ``min_silence_ms`` of silence confirmed the end. The recogniser's final for this segment
    has the same ``start_sample``."""

    type: ClassVar[str] = "vad.speech_stopped"
    start_sample: int = 0
    speech_end_sample: int = 0


@dataclass(frozen=True)
class VadProbability(Event):
    type: ClassVar[str] = "vad.probability"
    probability: float = 0.0


@dataclass(frozen=True)
class TranscriptPartial(Event):
    """An interim hypothesis: ``stable`` never changes in later partials, ``unstable`` may.
    The segment's :class:`TranscriptFinal` is decoded over the whole segment and can still
    differ from the stable words (e.g. in punctuation); it replaces them."""

    type: ClassVar[str] = "transcript.partial"
    stable: str = ""
    unstable: str = ""
    start_sample: int = 0

    @property
    def text(self) -> str:
        return (self.stable + " " + self.unstable).strip()


@dataclass(frozen=True)
class TranscriptFinal(Event):
    """A finished utterance ``[start_sample, sample)`` on the audio clock (the VAD segment,
    padding included); ``speech_end_sample`` is where the speech ended without the padding
    (the VAD's ``speech_end_sample``; a cut at ``max_window_s`` ends at the cut)."""

    type: ClassVar[str] = "transcript.final"
    text: str = ""
    start_sample: int = 0
    speech_end_sample: int = 0
    #: False on a part cut at ``max_window_s`` while the speech goes on; True on the final that
    #: ends its segment (the end of the user's turn)
    last: bool = True
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    language: str = ""
    words: tuple[tuple[str, float, float], ...] = ()


@dataclass(frozen=True)
class TranscriptSkipped(Event):
    """A speech segment ``[start_sample, sample)`` that gets no final: ``reason`` is
    ``too_short`` (under ``min_utterance_ms``), ``no_speech`` (Whisper's no-speech rule),
    ``low_confidence`` (or empty text), ``repetition`` or ``compression`` (a looping decode),
    ``hallucination`` (only a phrase Whisper writes on non-speech, such as "Thank you.", with
    its no-speech probability or log-probability on the non-speech side);
    ``text`` is the rejected hypothesis, if any. With it, every segment the recogniser takes
    ends in exactly one ``transcript.final`` or ``transcript.skipped`` at its end (a segment
    longer than ``max_window_s`` is cut into parts, each ending in one of the two)."""

    type: ClassVar[str] = "transcript.skipped"
    start_sample: int = 0
    reason: str = ""
    text: str = ""
    last: bool = True  # as TranscriptFinal.last


@dataclass(frozen=True)
class SpeechSegment(Event):
    """One speech segment's audio, whole (from ``sink.segments``): ``audio`` holds its samples
    (float32, frames x channels, at ``sample_rate``) for ``[start_sample, sample)``, padding
    included; ``speech_end_sample`` as in :class:`SpeechStopped`; ``path`` the WAV written, if
    any. A segment longer than the node's ``max_s`` comes in parts: ``part`` counts them from
    0 and ``last`` is False on all but the final one. ``audio`` is left out of JSON."""

    type: ClassVar[str] = "speech.segment"
    start_sample: int = 0
    speech_end_sample: int = 0
    path: str = ""
    part: int = 0
    last: bool = True
    audio: Any = field(default=None, compare=False, repr=False, metadata={"json": False})

    @property
    def duration_s(self) -> float:
        return (self.sample - self.start_sample) / self.sample_rate if self.sample_rate else 0.0


@dataclass(frozen=True)
class PlaybackStarted(Event):
    """A clip given to ``Engine.play`` began at ``sample`` (on the ``source.playback`` node's
    clock, the graph's clock at its rate): its first frame went to the node's output then.
    ``clip`` is the id ``play`` returned; ``frames`` its length at the node's rate."""

    type: ClassVar[str] = "playback.started"
    clip: int = 0
    frames: int = 0


@dataclass(frozen=True)
class PlaybackFinished(Event):
    """A clip played to its end: ``sample`` is one past its last frame; ``start_sample``
    where it began."""

    type: ClassVar[str] = "playback.finished"
    clip: int = 0
    frames: int = 0
    start_sample: int = 0


@dataclass(frozen=True)
class PlaybackInterrupted(Event):
    """A clip did not play to its end: ``reason`` is ``"stopped"`` when
    ``Engine.stop_playback`` cut it (a barge-in; ``sample`` is where its output ended, after a
    ``fade_ms`` fade, or a shorter one over what was left of the clip) or ``"ended"`` when the
    stream ended first (the engine stopped or its input ran out; ``sample`` is one past the
    last sample output). ``played`` is how many of its ``frames`` went out: 0 for a queued
    clip that never started (``start_sample`` is then -1). Every clip ``play`` accepted ends
    in exactly one ``playback.finished`` or ``playback.interrupted`` (unless the engine is
    stopped with ``drain=False``, which drops them without events)."""

    type: ClassVar[str] = "playback.interrupted"
    clip: int = 0
    frames: int = 0
    played: int = 0
    start_sample: int = -1
    reason: str = "stopped"


@dataclass(frozen=True)
class SoundEventStarted(Event):
    type: ClassVar[str] = "sound.started"
    group: str = ""
    score: float = 0.0
    top_classes: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class SoundEventStopped(Event):
    type: ClassVar[str] = "sound.stopped"
    group: str = ""
    start_sample: int = 0
    max_score: float = 0.0


@dataclass(frozen=True)
class SoundScores(Event):
    type: ClassVar[str] = "sound.scores"
    scores: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class NodeError(Event):
    """A node raised: the graph keeps running, the error becomes this event."""

    type: ClassVar[str] = "engine.node_error"
    message: str = ""


@dataclass(frozen=True)
class StreamStatus(Event):
    """Input overflow / output underflow reported by the audio backend."""

    type: ClassVar[str] = "engine.xrun"
    kind: str = ""
    count: int = 0


@dataclass(frozen=True)
class Control(Event):
    """A control message for a node (e.g. a spatializer position change)."""

    type: ClassVar[str] = "control"
    target: str = ""
    values: tuple[tuple[str, Any], ...] = ()
