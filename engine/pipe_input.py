"""``--input -``: audio from standard input, as a pipe gives it.

``arecord -f S16_LE -r 16000 -c 1 | audio-engine run graphs/live_captions.toml --input -`` or
``ffmpeg -i rtsp://camera/stream -f wav - | audio-engine run graphs/sound_monitor.toml --input -``.

The stream is WAV (its header read as it passes: the sizes in it are ignored, since a pipe's
writer cannot know them) or headerless PCM described by ``--raw-rate``, ``--raw-channels`` and
``--raw-format``. A reader thread converts what arrives and hands it to the engine's feed
(:meth:`engine.runtime.Engine.feed`), which resamples it to the rate the graph's microphone
declares; the feed waits while its buffer is full, so a fast writer (``cat file |``) is slowed
to the graph's pace and nothing is lost. The end of the pipe ends the stream and the graph
drains. Not real-time code: it allocates per read, on its own thread.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from .errors import AudioFileError, EngineError

#: --raw-format choices: (bytes per sample, how to read one)
RAW_FORMATS = {"s16le": 2, "s24le": 3, "s32le": 4, "f32le": 4}
_WAV_TAGS = {1: "pcm", 3: "float", 0xFFFE: "extensible"}


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
        fmt = self.format
        if fmt == "s16le":
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


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = stream.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def read_wav_header(stream: BinaryIO, head: bytes) -> PcmFormat:
    """The format of a WAV stream whose first 12 bytes (``RIFF....WAVE``) are ``head``; reads
    up to the ``data`` chunk's header, so what follows is sample data."""
    if head[8:12] != b"WAVE":
        raise AudioFileError("stdin: RIFF but not WAVE data")
    fmt: PcmFormat | None = None
    while True:
        ch = _read_exact(stream, 8)
        if len(ch) < 8:
            raise AudioFileError("stdin: the WAV header ends before its data chunk")
        cid, size = ch[:4], struct.unpack("<I", ch[4:])[0]
        if cid == b"data":
            if fmt is None:
                raise AudioFileError("stdin: WAV data before its fmt chunk")
            return fmt
        body = _read_exact(stream, size + (size & 1))
        if cid != b"fmt ":
            continue  # LIST, fact, ...: skipped
        if len(body) < 16:
            raise AudioFileError("stdin: WAV fmt chunk too short")
        tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
        if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's tag
            tag = struct.unpack("<H", body[24:26])[0]
        kind = {(1, 16): "s16le", (1, 24): "s24le", (1, 32): "s32le", (3, 32): "f32le"}.get(
            (tag, bits))
        if kind is None:
            raise AudioFileError(
                f"stdin: WAV with {bits}-bit {_WAV_TAGS.get(tag, f'format {tag}')} samples is "
                "not supported; send 16/24/32-bit PCM or 32-bit float (ffmpeg: -c:a pcm_s16le)")
        if not channels or not rate:
            raise AudioFileError(f"stdin: WAV header says {channels} channels at {rate} Hz")
        fmt = PcmFormat(rate, channels, kind)


def open_pipe(stream: BinaryIO, raw: PcmFormat) -> tuple[PcmFormat, bytes]:
    """Read the start of the stream: a WAV header gives the format, anything else is taken as
    headerless PCM in ``raw``'s format. Returns the format and the sample bytes already read."""
    head = _read_exact(stream, 12)
    if head[:4] == b"RIFF":
        return read_wav_header(stream, head), b""
    if head[:4] in (b"fLaC", b"OggS", b"ID3\x03", b"ID3\x04") or head[:3] == b"ID3":
        raise AudioFileError("stdin: compressed audio (FLAC / Ogg / MP3) cannot be read from a "
                             "pipe; send WAV or raw PCM (e.g. ffmpeg -i X -f wav -), or pass "
                             "the file itself with --input FILE")
    return raw, head


class PipeReader:
    """Reads ``stream`` on a daemon thread and feeds ``engine`` until the pipe ends (then
    ``end_feed``) or the engine stops. ``error`` holds a problem found in the stream."""

    def __init__(self, engine: Any, stream: BinaryIO, raw: PcmFormat, chunk_s: float = 0.02):
        self.engine = engine
        self.stream = stream
        self.raw = raw
        self.chunk_s = chunk_s
        self.error: EngineError | None = None
        self.frames = 0
        self.format: PcmFormat | None = None
        self._t = threading.Thread(target=self._run, name="stdin-reader", daemon=True)

    def start(self) -> PipeReader:
        self._t.start()
        return self

    def _run(self) -> None:
        eng = self.engine
        try:
            fmt, left = open_pipe(self.stream, self.raw)
            self.format = fmt
            want = max(fmt.frame_bytes, int(fmt.rate * self.chunk_s) * fmt.frame_bytes)
            # read1: what the pipe holds now, at most one system call (a live source is not
            # held back), through the same buffer as the header
            read = getattr(self.stream, "read1", self.stream.read)
            while eng.running:
                b = read(want)
                if not b:
                    break
                left += b
                whole = len(left) - len(left) % fmt.frame_bytes
                if whole:
                    x = fmt.decode(left[:whole])
                    left = left[whole:]
                    self.frames += len(x)
                    eng.feed(x, rate=fmt.rate)
        except EngineError as e:  # a bad stream: what arrived before it is still processed
            if not eng.running:  # the engine stopping under us, not a problem of the stream
                return
            self.error = e
        except OSError as e:
            self.error = AudioFileError(f"stdin: read error: {e.strerror or e}")
        if self.error is None and self.format is not None and not self.frames:
            self.error = AudioFileError("stdin: the pipe ended before any audio arrived")
        if eng.running:
            eng.end_feed()
