"""Headerless PCM: the sample formats and rates the engine takes from pipes, ``.raw`` files
and the web server's ``/ingest``, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: sample formats (``--raw-format``, /ingest's ``format``): bytes per sample
RAW_FORMATS = {"u8": 1, "s16le": 2, "s24le": 3, "s32le": 4, "f32le": 4}
#: the same as libsndfile subtypes (``source.file``'s ``raw_subtype``)
SF_SUBTYPES = {"u8": "PCM_U8", "s16le": "PCM_16", "s24le": "PCM_24", "s32le": "PCM_32",
               "f32le": "FLOAT"}
#: sample rates accepted for audio the engine converts itself (feeds, pipes, raw files)
MIN_RATE, MAX_RATE = 1000, 768000
MAX_CHANNELS = 64


@dataclass(frozen=True)
class PcmFormat:
    rate: int
    channels: int
    format: str  # a RAW_FORMATS key

    @property
    def frame_bytes(self) -> int:
        return RAW_FORMATS[self.format] * self.channels

    def decode(self, b: bytes) -> np.ndarray:
        """Whole frames of ``b`` as float32 (frames x channels), full scale 1.0."""
        import numpy as np  # here, so that the command line starts without it

        fmt = self.format
        if fmt == "u8":  # 8-bit WAV / arecord's default: unsigned, 128 = silence
            x = (np.frombuffer(b, np.uint8).astype(np.float32) - 128.0) / 128.0
        elif fmt == "s16le":
            x = np.frombuffer(b, "<i2").astype(np.float32) / 32768.0
        elif fmt == "s32le":
            x = (np.frombuffer(b, "<i4") / 2147483648.0).astype(np.float32)
        elif fmt == "f32le":
            x = np.frombuffer(b, "<f4").astype(np.float32)
        else:  # s24le: three bytes, sign-extended through the top byte of an int32
            u = np.frombuffer(b, np.uint8).reshape(-1, 3).astype(np.int32)
            v = (u[:, 0] << 8) | (u[:, 1] << 16) | (u[:, 2] << 24)
            x = (v >> 8).astype(np.float32) / 8388608.0
        return x.reshape(-1, self.channels)
