"""``source.file``: stream an audio file (any rate and channel count) into the graph."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from ..audio_io import open_audio
from ..errors import AudioFileError
from ..node import AUDIO, AudioSpec, Node, NodeIO, param, register
from ..pcm import MAX_RATE, SF_SUBTYPES

log = logging.getLogger(__name__)


@register
class FileSource(Node):
    """Reads ``path`` block by block at the file's own rate and channel count, or resampled to
    ``sample_rate`` (a streaming resampler whose filter delay is dropped, so frame ``i`` of the
    file is at ``i / rate`` seconds on the graph's clock, as for ``Engine.feed``). ``--input
    FILE`` uses that to give a graph the rate its microphone declared, as a sound server does.

    In a real-time run the engine paces quanta by the wall clock, so the file plays as a
    microphone would; with ``--fast`` it runs as fast as the graph can go. ``loop`` restarts at
    the end. File errors (missing, empty, corrupt, nothing readable) are raised when the graph
    loads (``negotiate``) as :class:`AudioFileError` naming the file and the problem. A
    truncated file (a recorder that crashed) plays up to where it stops, after one warning
    (logger ``engine``) that names it and says how much is there.
    """

    type_name = "source.file"
    outputs = {"audio": AUDIO}
    is_source = True

    @dataclass(frozen=True)
    class Params:
        path: str = param(doc="audio file (WAV, FLAC, OGG, ...; .raw = headerless PCM)")
        loop: bool = param(False, doc="restart at the end of the file (at start_s)")
        channels: int = param(0, ge=0, le=64, doc="output channels: 0 = as in the file; 1 = "
                                                  "average to mono; n = first n (or repeat)")
        start_s: float = param(0.0, ge=0, doc="start this many seconds into the file")
        sample_rate: int = param(0, ge=0, le=MAX_RATE, doc="output rate in Hz: 0 = the file's "
                                                         "own; another rate is resampled")
        raw_sample_rate: int = param(16000, gt=0, doc="sample rate of a .raw file")
        raw_channels: int = param(1, gt=0, le=64, doc="channels of a .raw file")
        raw_subtype: str = param("PCM_16", choices=tuple(SF_SUBTYPES.values()),
                                 doc="sample format of a .raw file")

    def __init__(self, node_id: str, params: Params):
        super().__init__(node_id, params)
        self._f: sf.SoundFile | None = None
        self._frames = 0  # the file's readable frames
        self._pos = 0  # the file's read position
        self.finished = False
        self.frames_read = 0
        self._rs = None  # StreamingResampler when sample_rate differs from the file's

    def _open(self) -> sf.SoundFile:
        p = self.params
        a = open_audio(p.path, p.raw_sample_rate, p.raw_channels, p.raw_subtype)
        if a.warning:
            log.warning("%s", a.warning)
        self._frames = a.frames
        return a.file

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        f = self._f or self._open()
        self._f = f
        rate = self.params.sample_rate or f.samplerate
        block = math.ceil(rate * self.quantum_s) + 1
        ch = self.params.channels or f.channels
        return {"audio": AudioSpec(rate, ch, block)}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        if self._f is None:
            self._f = self._open()
        spec = specs["audio"]
        fch, ch = self._f.channels, spec.channels
        fin, fout = self._f.samplerate, spec.sample_rate
        # the most file frames one read takes: a block's worth, at the file's rate
        self._max_read = spec.max_block if fin == fout else math.ceil(spec.max_block * fin
                                                                      / fout) + 2
        self._mix = None
        self._mapped = None
        # file frames are read into a scratch buffer when they are mapped to other channels or
        # resampled (allocated here: no allocation later)
        self._scratch = np.zeros((self._max_read, fch), np.float32)
        if ch != fch:
            if ch == 1:
                self._mix = np.full((fch, 1), 1.0 / fch, np.float32)
            else:
                self._mix = np.zeros((fch, ch), np.float32)
                for j in range(ch):
                    self._mix[j % fch, j] = 1.0
        self._rs = None
        if fin != fout:
            from ..dsp.resample import StreamingResampler

            self._rs = StreamingResampler(fin, fout, ch)
            if self._mix is not None:
                self._mapped = np.zeros((self._max_read, ch), np.float32)
            # resampled frames not yet delivered: a block, one read's output, the flush tail
            self._back = np.zeros((spec.max_block + self._rs.max_output(self._max_read)
                                   + self._rs.max_flush + 8, ch), np.float32)
        #: where the stream starts (and a loop or reset() starts again): start_s into the file
        self._start = min(int(self.params.start_s * self._f.samplerate), self._frames)
        self._reset_stream()
        self._seek(self._start)

    def _seek(self, frame: int) -> None:
        self._pos = self._f.seek(frame)

    def _reset_stream(self) -> None:
        self._eof = False  # the file ended (no loop)
        self._n_back = 0
        if self._rs is not None:
            self._rs.reset()
            self._skip = self._rs.latency_out  # output frames before the first input frame

    def _read(self, out: np.ndarray, want: int) -> int:
        """Up to ``want`` file frames into ``out`` (looping when asked); sets ``_eof``. Reads
        stop at the readable end (a truncated file's decoder fails past it)."""
        f = self._f
        got = 0
        while got < want:
            k = min(want - got, self._frames - self._pos)
            try:
                n = len(f.read(k, dtype="float32", always_2d=True,
                               out=out[got:got + k])) if k > 0 else 0
            except (sf.LibsndfileError, RuntimeError) as e:
                self.finished = True
                raise AudioFileError(f"{self.params.path}: read error: {e}") from None
            got += n
            self._pos += n
            if n == 0 or got < want and self._pos >= self._frames:
                if self.params.loop and self._start < self._frames:  # (a start at the end:
                    self._seek(self._start)  # no loop)
                    continue
                self._eof = True
                break
        self.frames_read += got
        return got

    def process(self, io: NodeIO) -> None:
        if self._f is None or self.finished:
            return
        final = io.out("audio")
        if self._rs is not None:
            return self._process_resampled(io, final)
        out = self._scratch if self._mix is not None else final
        got = self._read(out, min(io.frames, len(out)))
        self.finished = self._eof
        if self._mix is not None:
            np.matmul(out[:got], self._mix, out=final[:got])
        io.produced("audio", got)

    def _process_resampled(self, io: NodeIO, final: np.ndarray) -> None:
        rs, back = self._rs, self._back
        want = min(io.frames, len(final))
        while self._n_back < want and not self._eof:
            k = min(self._max_read, math.ceil((want - self._n_back) * rs.in_rate
                                              / rs.out_rate) + 1)
            got = self._read(self._scratch, k)
            x = self._scratch[:got]
            if self._mix is not None:
                np.matmul(x, self._mix, out=self._mapped[:got])
                x = self._mapped[:got]
            m = rs.process(x, back[self._n_back:])
            if self._eof:  # the filter's tail
                while (t := rs.flush(back[self._n_back + m:])) > 0:
                    m += t
            self._keep(m)
        give = min(want, self._n_back)
        final[:give] = back[:give]
        back[:self._n_back - give] = back[give:self._n_back]
        self._n_back -= give
        self.finished = self._eof and self._n_back == 0
        io.produced("audio", give)

    def _keep(self, m: int) -> None:
        """Keep ``m`` new frames at the end of the backlog, less the filter's start delay."""
        drop = min(self._skip, m)
        if drop:
            n = self._n_back
            self._back[n:n + m - drop] = self._back[n + drop:n + m]
            self._skip -= drop
        self._n_back += m - drop

    def reset(self) -> None:
        if self._f is not None:
            self._seek(getattr(self, "_start", 0))
        self.finished = False
        if hasattr(self, "_n_back"):  # prepared
            self._reset_stream()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def stats(self) -> dict:
        return {"frames_read": self.frames_read}
