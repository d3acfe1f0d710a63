"""``sink.segments``: each speech segment's audio, whole, for the application.

Wire it after a VAD, ``in = { audio = "vad.speech", events = "vad.events" }``. The VAD's ``speech``
port carries only the speech (pre-roll included), one segment after the other; this node cuts it
back into segments and, once a segment has ended, emits a
:class:`~engine.events.SpeechSegment` (``speech.segment``) whose ``audio`` holds its samples: what
an assistant prototype sends to its own recogniser, keyword spotter or speaker check
(``eng.on("speech.segment", lambda ev: ...)``). With ``dir`` each segment is also written there as
a WAV file (``<prefix>_<start in ms>.wav``, its path in the event).

A segment longer than ``max_s`` is delivered in parts of ``max_s`` (``part`` 0, 1, ...; ``last``
on the final one), so memory stays bounded whatever the VAD's ``max_speech_s``.

Real-time rules: a worker node (``block`` queue, so no speech sample is dropped); ``process``
copies into a buffer allocated in ``prepare``; per segment it copies the samples once for the
event and writes the file, on this node's own thread. A file that cannot be written becomes one
``engine.node_error`` event (counted in ``write_errors``); the event still carries the audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..events import NodeError, SpeechSegment, SpeechStarted, SpeechStopped
from ..node import AUDIO, EVENTS, AudioSpec, Node, NodeIO, param, register


@dataclass
class _Segment:
    start: int  # absolute input sample of the part being collected
    end: int | None = None  # known once the VAD says it stopped
    speech_end: int = 0
    part: int = 0


@register
class SegmentsSink(Node):
    """Speech segments as events with their audio (see the module docstring)."""

    type_name = "sink.segments"
    inputs = {"audio": AUDIO, "events": EVENTS}
    outputs = {"events": EVENTS}
    thread = "worker"
    queue_policy = "block"
    queue_size = 6000

    @dataclass(frozen=True)
    class Params:
        max_s: float = param(60.0, gt=0, le=600, doc="longest part delivered at once (s)")
        dir: str = param("", doc="write each segment as a WAV file here ('' = no files)")
        prefix: str = param("segment", doc="file name prefix")
        subtype: str = param("PCM_16", choices=("PCM_16", "PCM_24", "FLOAT"),
                             doc="WAV sample format")

    def __init__(self, node_id: str, params: Params):
        super().__init__(node_id, params)
        self.segments = 0
        self.files_written = 0
        self.write_errors = 0

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        return {}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        s = specs["audio"]
        self.rate = int(s.sample_rate)
        self.buf = np.zeros((max(1, int(round(self.params.max_s * self.rate))), s.channels),
                            np.float32)
        self.n = 0  # samples of the current part in buf
        self.queue: list[_Segment] = []

    def process(self, io: NodeIO) -> None:
        for ev in io.events("events"):
            if isinstance(ev, SpeechStarted):
                self.queue.append(_Segment(ev.sample))
            elif isinstance(ev, SpeechStopped):
                for seg in self.queue:
                    if seg.end is None:
                        seg.end, seg.speech_end = ev.sample, ev.speech_end_sample or ev.sample
                        break
        x = io.audio("audio") if io.has_audio("audio") else np.zeros((0, 1), np.float32)
        pos = 0
        while True:
            self._complete(io)
            if pos >= len(x) or not self.queue:
                break  # (audio without a segment cannot come from a VAD)
            seg = self.queue[0]
            room = len(self.buf) - self.n
            if seg.end is not None:
                room = min(room, seg.end - seg.start - self.n)
            k = min(room, len(x) - pos)
            self.buf[self.n:self.n + k] = x[pos:pos + k]
            self.n += k
            pos += k
            if self.n == len(self.buf) and (seg.end is None or seg.start + self.n < seg.end):
                self._deliver(io, seg, seg.start + self.n, last=False)

    def _complete(self, io: NodeIO) -> None:
        """Deliver the segments whose audio is all there. A VAD that splits long speech
        (``max_speech_s``) places the split inside audio already released, so the buffer may
        hold more than the segment: the excess is the start of the next segment (which begins
        at the split) and stays in the buffer for it."""
        while self.queue and self.queue[0].end is not None \
                and self.queue[0].start + self.n >= self.queue[0].end:
            seg = self.queue.pop(0)
            # a split inside a part already delivered (max_s) ends the segment there
            end = max(seg.end, seg.start)  # type: ignore[type-var]
            keep = end - seg.start
            over = self.n - keep
            self.n = keep
            self._deliver(io, seg, end, last=True)
            if over > 0 and self.queue and self.queue[0].start <= end:
                self.queue[0].start = end  # the next segment goes on from there
                self.buf[:over] = self.buf[keep:keep + over].copy()
                self.n = over

    def _deliver(self, io: NodeIO, seg: _Segment, end: int, last: bool) -> None:
        audio = self.buf[: self.n].copy()
        path = self._write(io, seg, audio, end) if self.params.dir and len(audio) else ""
        io.emit("events", SpeechSegment(end, self.rate, self.id, start_sample=seg.start,
                                        speech_end_sample=min(seg.speech_end or end, end),
                                        path=path, part=seg.part, last=last, audio=audio))
        self.segments += last
        if not last:  # the next part goes on where this one ended
            seg.start, seg.part = end, seg.part + 1
        self.n = 0

    def _write(self, io: NodeIO, seg: _Segment, audio: np.ndarray, end: int) -> str:
        ms = int(round(seg.start * 1000 / self.rate))
        path = Path(self.params.dir) / f"{self.params.prefix}_{ms:09d}.wav"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), audio, self.rate, subtype=self.params.subtype)
        except (OSError, sf.LibsndfileError) as e:
            self.write_errors += 1
            io.emit("events", NodeError(end, self.rate, self.id,
                                        message=f"{path}: cannot write segment: {e}"))
            return ""
        self.files_written += 1
        return str(path)

    def flush(self, io: NodeIO) -> None:
        """End of stream: a segment still open ends where its audio ends."""
        while self.queue:
            seg = self.queue.pop(0)
            if seg.end is None:
                seg.speech_end = seg.start + self.n
            self._deliver(io, seg, seg.start + self.n, last=True)

    def reset(self) -> None:
        self.queue.clear()
        self.n = 0

    def stats(self) -> dict:
        d = self.params.dir
        return {"segments": self.segments, "files_written": self.files_written,
                "write_errors": self.write_errors,
                "files": [f"{d}/{self.params.prefix}_*.wav"] if self.files_written else []}
