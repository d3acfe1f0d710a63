"""``--input -``: audio from standard input, as a pipe gives it.

``arecord -f S16_LE -r 16000 -c 1 | audio-engine run graphs/live_captions.toml --input -`` or
``ffmpeg -i rtsp://camera/stream -f wav - | audio-engine run graphs/sound_monitor.toml --input -``.

The stream is WAV or RF64 (its header read as it passes; a data size a live writer cannot know,
0 or 0xFFFFFFFF or near 2 GiB, means "until the pipe ends", a real one is obeyed so chunks after
the data are not played as audio) or headerless PCM described by ``--raw-rate``,
``--raw-channels`` and ``--raw-format``. A reader thread converts what arrives and hands it to
the engine's feed (:meth:`engine.runtime.Engine.feed`), which resamples it to the rate the
graph's microphone declares; the feed waits while its buffer is full, so nothing is lost. Like a
file, a pipe is taken in real time (a writer faster than that, ``cat file |``, is held to it; a
live writer that stalled is caught up at once) unless ``--fast``. The end of the pipe ends the
stream and the graph drains. Not real-time code: it allocates per read, on its own thread, and
reads the file descriptor itself (a thread blocked in a buffered ``sys.stdin`` read aborts the
interpreter at exit).
"""

from __future__ import annotations

import os
import struct
import threading
import time
from typing import Any, BinaryIO

from .errors import AudioFileError, EngineError
from .pcm import PcmFormat

_WAV_TAGS = {1: "PCM", 3: "float", 6: "A-law", 7: "\u00b5-law", 0xFFFE: "extensible"}
#: a WAV data size at or above this (or 0) is a live writer's "unknown" (arecord, sox: ~2 GiB)
_UNKNOWN_SIZE = 0x7FFF0000


class FdStream:
    """Unbuffered reads of a file descriptor (standard input): ``read1`` returns what the pipe
    holds now, at most ``n`` bytes, with one system call."""

    def __init__(self, fd: int):
        self.fd = fd

    def read1(self, n: int) -> bytes:
        return os.read(self.fd, n)

    read = read1


def _read_exact(stream: BinaryIO | FdStream, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = stream.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def read_wav_header(stream: BinaryIO | FdStream, head: bytes) -> tuple[PcmFormat, int | None]:
    """The format of a WAV / RF64 stream whose first 12 bytes are ``head``, and the bytes of
    sample data (None: until the stream ends); reads up to the ``data`` chunk's header, so what
    follows is sample data."""
    if head[8:12] != b"WAVE":
        raise AudioFileError(f"stdin: {head[:4].decode('latin-1')} but not WAVE data")
    fmt: PcmFormat | None = None
    while True:
        ch = _read_exact(stream, 8)
        if len(ch) < 8:
            raise AudioFileError("stdin: the WAV header ends before its data chunk")
        cid, size = ch[:4], struct.unpack("<I", ch[4:])[0]
        if cid == b"data":
            if fmt is None:
                raise AudioFileError("stdin: WAV data before its fmt chunk")
            known = head[:4] == b"RIFF" and 0 < size < _UNKNOWN_SIZE
            return fmt, size if known else None
        body = _read_exact(stream, size + (size & 1))
        if cid != b"fmt ":
            continue  # LIST, fact, ...: skipped
        if len(body) < 16:
            raise AudioFileError("stdin: WAV fmt chunk too short")
        tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
        if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's tag
            tag = struct.unpack("<H", body[24:26])[0]
        kind = {(1, 8): "u8", (1, 16): "s16le", (1, 24): "s24le", (1, 32): "s32le",
                (3, 32): "f32le"}.get((tag, bits))
        if kind is None:
            what = _WAV_TAGS.get(tag, f"format {tag}")
            raise AudioFileError(
                f"stdin: WAV with {what} samples ({bits} bits) is not supported; send 8/16/24/32-"
                "bit PCM or 32-bit float (ffmpeg: -c:a pcm_s16le; arecord: -f S16_LE)")
        if not channels or not rate:
            raise AudioFileError(f"stdin: WAV header says {channels} channels at {rate} Hz")
        fmt = PcmFormat(rate, channels, kind)


def open_pipe(stream: BinaryIO | FdStream,
              raw: PcmFormat) -> tuple[PcmFormat, bytes, int | None]:
    """Read the start of the stream: a WAV header gives the format, anything else is taken as
    headerless PCM in ``raw``'s format. Returns the format, the sample bytes already read and
    the bytes of sample data (None: until the stream ends)."""
    head = _read_exact(stream, 12)
    if head[:4] in (b"RIFF", b"RF64", b"BW64"):
        fmt, size = read_wav_header(stream, head)
        return fmt, b"", size
    if head[:4] in (b"fLaC", b"OggS", b"ID3\x03", b"ID3\x04") or head[:3] == b"ID3":
        raise AudioFileError("stdin: compressed audio (FLAC / Ogg / MP3) cannot be read from a "
                             "pipe; send WAV or raw PCM (e.g. ffmpeg -i X -f wav -), or pass "
                             "the file itself with --input FILE")
    return raw, head, None


class PipeReader:
    """Reads ``stream`` on a daemon thread and feeds ``engine`` until the pipe ends (then
    ``end_feed``) or the engine stops. ``realtime``: no faster than the audio's own time since
    the first frame (a stalled live writer is caught up at once). ``error`` holds a problem
    found in the stream (what came before it is processed)."""

    def __init__(self, engine: Any, stream: BinaryIO | FdStream, raw: PcmFormat,
                 realtime: bool = True, chunk_s: float = 0.02):
        self.engine = engine
        self.stream = stream
        self.raw = raw
        self.realtime = realtime
        self.chunk_s = chunk_s
        self.error: EngineError | None = None
        self.frames = 0
        self.format: PcmFormat | None = None
        self._t = threading.Thread(target=self._run, name="stdin-reader", daemon=True)

    def start(self) -> PipeReader:
        self._t.start()
        return self

    def _feed(self, fmt: PcmFormat, b: bytes, t0: float) -> None:
        x = fmt.decode(b)
        if self.realtime:  # the audio's time so far, against the wall clock's
            ahead = self.frames / fmt.rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        self.frames += len(x)
        self.engine.feed(x, rate=fmt.rate)

    def _run(self) -> None:
        eng = self.engine
        try:
            fmt, left, size = open_pipe(self.stream, self.raw)
            self.format = fmt
            t0 = time.monotonic()
            want = max(fmt.frame_bytes, int(fmt.rate * self.chunk_s) * fmt.frame_bytes)
            read = getattr(self.stream, "read1", self.stream.read)
            todo = size  # bytes of sample data still to come (None: until the pipe ends)
            if todo is not None:
                left, todo = left[:todo], todo - len(left[:todo])
            while True:
                whole = len(left) - len(left) % fmt.frame_bytes
                if whole:
                    self._feed(fmt, left[:whole], t0)
                    left = left[whole:]
                if not eng.running or todo == 0:
                    break
                b = read(want if todo is None else min(want, todo))
                if not b:
                    break
                if todo is not None:
                    todo -= len(b)
                left += b
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
