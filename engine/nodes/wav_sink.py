"""``sink.wav``: record a stream to an audio file without losing a sample."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from ..errors import AudioFileError
from ..node import AUDIO, AudioSpec, Node, NodeIO, param, register


@register
class WavSink(Node):
    """Writes every frame it receives to ``path``. It runs on its own worker thread behind a
    queue with the ``block`` policy, so disk latency never reaches the DSP thread and no block
    is ever dropped (the queue holds about a minute of 10 ms quanta)."""

    type_name = "sink.wav"
    inputs = {"audio": AUDIO}
    thread = "worker"
    queue_policy = "block"
    queue_size = 6000

    @dataclass(frozen=True)
    class Params:
        path: str = param(doc="output file; the format follows the extension (.wav, .flac)")
        subtype: str = param("FLOAT", choices=("PCM_16", "PCM_24", "PCM_32", "FLOAT"),
                             doc="sample format")

    def __init__(self, node_id: str, params: Params):
        super().__init__(node_id, params)
        self._f: sf.SoundFile | None = None
        self.frames_written = 0

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        return {}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        s = specs["audio"]
        p = Path(self.params.path)
        subtype = self.params.subtype
        if p.suffix.lower() == ".flac" and subtype in ("FLOAT", "PCM_32"):
            subtype = "PCM_24"
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            self._f = sf.SoundFile(str(p), "w", samplerate=s.sample_rate, channels=s.channels,
                                   subtype=subtype)
        except (OSError, sf.LibsndfileError, TypeError, ValueError) as e:
            raise AudioFileError(f"{p}: cannot create recording: {e}") from None

    def process(self, io: NodeIO) -> None:
        x = io.audio("audio")
        if len(x) and self._f is not None:
            self._f.write(x)
            self.frames_written += len(x)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def stats(self) -> dict:
        return {"frames_written": self.frames_written, "path": self.params.path,
                "files": [self.params.path]}
