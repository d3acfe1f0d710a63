"""``sink.wav``: record a stream to an audio file without losing a sample."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ..errors import AudioFileError
from ..node import AUDIO, AudioSpec, Node, NodeIO, param, register, unwritable

#: file name extension -> libsndfile format (what ``soundfile`` infers from the name)
_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".mp3": "MP3",
            ".aif": "AIFF", ".aiff": "AIFF", ".w64": "W64", ".rf64": "RF64", ".caf": "CAF"}


def file_format(path: str, subtype: str) -> tuple[str, str]:
    """``(format, subtype)`` for ``path``: the format from its extension; the subtype asked
    for, or the nearest the format holds (FLAC: PCM_24 for float; OGG: Vorbis; MP3: MPEG
    layer III). Raises ValueError for an extension that names no format written here."""
    ext = Path(path).suffix.lower()
    if ext not in _FORMATS:
        raise ValueError(f"path: cannot tell the file format from '{Path(path).name}': use "
                         f"one of {', '.join(sorted(_FORMATS))}")
    fmt = _FORMATS[ext]
    if sf.check_format(fmt, subtype):
        return fmt, subtype
    if fmt == "FLAC":
        return fmt, "PCM_24"
    return fmt, sf.default_subtype(fmt)


@register
class WavSink(Node):
    """Writes every frame it receives to ``path``. It runs on its own worker thread behind a
    queue with the ``block`` policy, so disk latency never reaches the DSP thread and no block
    is ever dropped (the queue holds about a minute of 10 ms quanta).

    The file is created when the first audio arrives (an existing recording is not emptied by
    a run that fails to start); ``prepare`` only checks that it can be written. Samples beyond
    [-1, 1] that an integer format clips are counted (``clipped_samples``)."""

    type_name = "sink.wav"
    inputs = {"audio": AUDIO}
    thread = "worker"
    queue_policy = "block"
    queue_size = 6000

    @dataclass(frozen=True)
    class Params:
        path: str = param(doc="output file; the format follows the extension (.wav, .flac, "
                              ".ogg, .mp3, .aiff, .w64, .rf64, .caf)")
        subtype: str = param("FLOAT", choices=("PCM_16", "PCM_24", "PCM_32", "FLOAT"),
                             doc="sample format (a format that cannot hold it uses its own: "
                                 "FLAC PCM_24, OGG Vorbis, MP3)")

    def __init__(self, node_id: str, params: Params):
        super().__init__(node_id, params)
        self._f: sf.SoundFile | None = None
        self.frames_written = 0
        self.clipped_samples = 0

    @classmethod
    def validate_params(cls, params: Any) -> list[str]:
        try:
            file_format(params.path, params.subtype)
        except ValueError as e:
            return [str(e)]
        return []

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        return {}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        self._spec = specs["audio"]
        p = self.params.path
        try:
            self._format = file_format(p, self.params.subtype)
        except ValueError as e:
            raise AudioFileError(f"{p}: cannot create recording: {e}") from None
        why = unwritable(p)
        if why:
            raise AudioFileError(f"{p}: cannot create recording: {why}")
        self._clips = self._format[1] != "FLOAT"

    def _open(self) -> sf.SoundFile:
        s = self._spec
        fmt, subtype = self._format
        try:
            self._f = sf.SoundFile(self.params.path, "w", samplerate=s.sample_rate,
                                   channels=s.channels, format=fmt, subtype=subtype)
        except (OSError, sf.LibsndfileError, TypeError, ValueError) as e:
            raise AudioFileError(f"{self.params.path}: cannot create recording: {e}") from None
        return self._f

    def process(self, io: NodeIO) -> None:
        x = io.audio("audio")
        if len(x):
            f = self._f or self._open()
            f.write(x)
            self.frames_written += len(x)
            if self._clips:
                self.clipped_samples += int(np.count_nonzero(np.abs(x) > 1.0))

    def flush(self, io: NodeIO) -> None:
        if self._f is None:  # a stream with no audio still leaves a (valid, empty) file
            self._open()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def stats(self) -> dict:
        return {"frames_written": self.frames_written, "clipped_samples": self.clipped_samples,
                "path": self.params.path, "files": [self.params.path]}
