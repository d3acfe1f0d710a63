"""``source.file``: stream an audio file (any rate and channel count) into the graph."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from ..audio_io import open_audio
from ..errors import AudioFileError
from ..node import AUDIO, AudioSpec, Node, NodeIO, param, register


@register
class FileSource(Node):
    """Reads ``path`` block by block at the file's own rate and channel count.

    In a real-time run the engine paces quanta by the wall clock, so the file plays as a
    microphone would; with ``--fast`` it runs as fast as the graph can go. ``loop`` restarts at
    the end. File errors (missing, empty, corrupt, truncated) are raised in ``prepare`` as
    :class:`AudioFileError` naming the file and the problem.
    """

    type_name = "source.file"
    outputs = {"audio": AUDIO}
    is_source = True

    @dataclass(frozen=True)
    class Params:
        path: str = param(doc="audio file (WAV, FLAC, OGG, ...; .raw = headerless PCM)")
        loop: bool = param(False, doc="restart at the end of the file")
        channels: int = param(0, ge=0, le=64, doc="output channels: 0 = as in the file; 1 = "
                                                  "average to mono; n = first n (or repeat)")
        start_s: float = param(0.0, ge=0, doc="start this many seconds into the file")
        raw_sample_rate: int = param(16000, gt=0, doc="sample rate of a .raw file")
        raw_channels: int = param(1, gt=0, le=64, doc="channels of a .raw file")
        raw_subtype: str = param("PCM_16", choices=("PCM_16", "PCM_24", "PCM_32", "FLOAT"),
                                 doc="sample format of a .raw file")

    quantum_s = 0.01

    def __init__(self, node_id: str, params: Params):
        super().__init__(node_id, params)
        self._f: sf.SoundFile | None = None
        self.finished = False
        self.frames_read = 0

    def _open(self) -> sf.SoundFile:
        p = self.params
        return open_audio(p.path, p.raw_sample_rate, p.raw_channels, p.raw_subtype)

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        f = self._f or self._open()
        self._f = f
        block = math.ceil(f.samplerate * self.quantum_s) + 1
        ch = self.params.channels or f.channels
        return {"audio": AudioSpec(f.samplerate, ch, block)}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        if self._f is None:
            self._f = self._open()
        fch, ch = self._f.channels, specs["audio"].channels
        self._mix = None
        if ch != fch:  # read into a scratch buffer, then map channels (no allocation later)
            self._scratch = np.zeros((specs["audio"].max_block, fch), np.float32)
            if ch == 1:
                self._mix = np.full((fch, 1), 1.0 / fch, np.float32)
            else:
                self._mix = np.zeros((fch, ch), np.float32)
                for j in range(ch):
                    self._mix[j % fch, j] = 1.0
        if self.params.start_s:
            self._f.seek(min(int(self.params.start_s * self._f.samplerate), self._f.frames))

    def process(self, io: NodeIO) -> None:
        f = self._f
        if f is None or self.finished:
            return
        final = io.out("audio")
        out = self._scratch if self._mix is not None else final
        want = min(io.frames, len(out))
        got = 0
        while got < want:
            try:
                n = len(f.read(want - got, dtype="float32", always_2d=True,
                               out=out[got:want]))
            except (sf.LibsndfileError, RuntimeError) as e:
                self.finished = True
                raise AudioFileError(f"{self.params.path}: read error: {e}") from None
            got += n
            if n == 0 or got < want and f.tell() >= f.frames:
                if self.params.loop:
                    f.seek(0)
                    continue
                self.finished = True
                break
        self.frames_read += got
        if self._mix is not None:
            np.matmul(out[:got], self._mix, out=final[:got])
        io.produced("audio", got)

    def reset(self) -> None:
        if self._f is not None:
            self._f.seek(0)
        self.finished = False

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def stats(self) -> dict:
        return {"frames_read": self.frames_read}
