"""Reading audio files with errors a user can act on.

Every failure names the file and what is wrong with it (missing, empty, not audio, nothing
readable, unsupported format) as an :class:`~engine.errors.AudioFileError`; nothing raw reaches
the user. A truncated file (a recorder that crashed, a download cut short) is not a failure: its
readable part is read, and :attr:`AudioFile.warning` says how much that is. WAV/FLAC/OGG and
everything else libsndfile reads; headerless ``.raw``/``.pcm`` files need their format stated
(``raw_sample_rate``, ``raw_channels``, ``raw_subtype``).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import AudioFileError

RAW_EXTENSIONS = (".raw", ".pcm")
#: libsndfile's note on a WAV ``data`` / AIFF ``SSND`` chunk shorter than its header says (the
#: file's ``frames`` are then those present)
_SHORT_CHUNK = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.M)
#: what libmpg123 (libsndfile's MP3 decoder) prints on fd 2 by itself while a file is opened
_DECODER_NOISE = re.compile(rb"^(?:Note: |Warning: |\[[^\]\n]*mpg123[^\]\n]*\] )")
_FD2_LOCK = threading.Lock()


@dataclass(frozen=True)
class AudioFile:
    """An open file and how much of it can be read."""

    file: sf.SoundFile
    #: frames that can be read from the start: fewer than the header's when it is truncated
    frames: int
    #: what is wrong with a file that is read all the same (truncated), else ""
    warning: str = ""


def open_audio(path: str | Path, raw_sample_rate: int = 16000, raw_channels: int = 1,
               raw_subtype: str = "PCM_16") -> AudioFile:
    """Open ``path`` for streaming reads, having found how much of it is readable."""
    p = Path(path)
    if not p.exists():
        raise AudioFileError(f"{p}: no such audio file")
    if p.is_dir():
        raise AudioFileError(f"{p}: is a folder, not an audio file")
    size = p.stat().st_size
    if size == 0:
        raise AudioFileError(f"{p}: the file is empty (0 bytes)")

    def opener() -> sf.SoundFile:
        if p.suffix.lower() in RAW_EXTENSIONS:
            return sf.SoundFile(str(p), samplerate=raw_sample_rate, channels=raw_channels,
                                subtype=raw_subtype, format="RAW", endian="LITTLE")
        return sf.SoundFile(str(p))

    with _decoder_quiet():
        try:
            f = opener()
        except sf.LibsndfileError as e:
            why = (e.error_string or "").split(":")[-1].strip().rstrip(".") or "unknown error"
            if "regular file" in why and p.is_file():  # what libsndfile says when a file
                why = "format not recognised"  # named .mp3 is not MP3: untrue
            raise AudioFileError(
                f"{p}: not a readable audio file ({why[:1].lower() + why[1:]}). Supported: WAV, "
                "FLAC, OGG/Vorbis, AIFF and other formats libsndfile reads; headerless PCM "
                "needs a .raw extension") from None
        except (OSError, RuntimeError, TypeError, ValueError) as e:
            raise AudioFileError(f"{p}: cannot open audio file: {e}") from None
        if f.frames == 0:
            f.close()
            raise AudioFileError(f"{p}: the file holds no audio frames (header only or empty)")
        if f.samplerate <= 0 or f.channels <= 0:
            f.close()
            raise AudioFileError(f"{p}: invalid header (sample rate {f.samplerate}, "
                                 f"{f.channels} channels)")
        return _readable(f, p, opener)


def _readable(f: sf.SoundFile, p: Path, opener: Callable[[], sf.SoundFile]) -> AudioFile:
    """Read the last frames, so that a corrupt or truncated file is found here, not mid-stream.
    A truncated one is read up to where it stops, with a warning; one with nothing readable, or
    with NaN samples, is refused."""
    announced = f.frames  # frames the header announces
    m = _SHORT_CHUNK.search(f.extra_info)
    if m and 0 < int(m.group(2)) < int(m.group(1)):  # libsndfile counts the frames present
        announced = round(f.frames * int(m.group(1)) / int(m.group(2)))
    frames = f.frames
    tail, why = _read_tail(f, frames)
    if tail is None or len(tail) < min(frames, 4096):  # cut short: find where it stops
        f.close()
        frames = _last_readable(opener, frames)
        if frames == 0:  # nothing to play: refused, as before
            what = (f"is corrupt or truncated near its end ({why})" if why else
                    f"is truncated: its header promises {announced} frames but none are present")
            raise AudioFileError(f"{p}: the file {what}; re-export or re-download it")
        f = opener()
        tail, why = _read_tail(f, frames)
        if tail is None:  # (readable when probed a moment ago)
            f.close()
            raise AudioFileError(f"{p}: the file is corrupt near its end ({why}); re-export "
                                 "or re-download it")
    if not np.all(np.isfinite(tail)):
        f.close()
        raise AudioFileError(f"{p}: the file contains NaN or infinite samples")
    warning = ""
    if frames < announced:
        rate = f.samplerate
        warning = (f"{p}: truncated (header announces {announced / rate:.1f} s, "
                   f"{frames / rate:.2f} s present); processing the {frames / rate:.2f} s "
                   "that are there")
    return AudioFile(f, frames, warning)


def _read_tail(f: sf.SoundFile, frames: int) -> tuple[np.ndarray | None, str]:
    """The last (up to 4096) of the first ``frames`` frames, and back to the start; or None and
    libsndfile's reason (after which ``f`` is unusable: libsndfile's errors stick)."""
    n = min(frames, 4096)
    try:
        if f.seekable():
            f.seek(frames - n)
        got = f.read(n, dtype="float32", always_2d=True)
        f.seek(0)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        return None, str(e)
    return got, ""


def _last_readable(opener: Callable[[], sf.SoundFile], frames: int) -> int:
    """How many frames from the start of a truncated file can be read (of ``frames``
    announced): where reading one frame stops working, by bisection. Each try opens the file
    afresh, since a failed read leaves libsndfile's handle in error; a FLAC or MP3 decoder
    seeks without reading what lies before, so this costs about 20 seeks, not a decode."""

    def reads(k: int) -> bool:
        try:
            with opener() as g:
                g.seek(k)
                return len(g.read(1, dtype="float32")) == 1
        except (sf.LibsndfileError, RuntimeError, ValueError):
            return False

    lo, hi = -1, frames  # frame lo reads (-1: none known), frame hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if reads(mid) else (lo, mid)
    return lo + 1


@contextmanager
def _decoder_quiet() -> Iterator[None]:
    """Keep what libsndfile's MP3 decoder (libmpg123) prints by itself on fd 2 ("Note: Illegal
    Audio-MPEG-Header ...", "Warning: Xing stream size off ...") off the terminal while a file
    is opened and probed: the message this module raises, or the warning it gives, says what
    is wrong. fd 2 goes to a temporary file meanwhile and is always restored; lines others
    wrote to it meanwhile (another thread's log) are passed on after. One opening at a time
    (the lock): nested redirections from two threads could leave fd 2 on the wrong file."""
    with _FD2_LOCK:
        saved = tmp = None
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
            tmp = tempfile.TemporaryFile()
            saved = os.dup(2)
            os.dup2(tmp.fileno(), 2)
        except (OSError, ValueError):  # no fd 2 (a daemon), a closed sys.stderr, no temp dir
            if saved is not None:
                os.close(saved)
            saved = None
        try:
            yield
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
            if tmp is not None:
                with tmp:
                    if saved is not None:
                        tmp.seek(0)
                        kept = [ln for ln in tmp.read().splitlines(keepends=True)
                                if not _DECODER_NOISE.match(ln)]
                        if kept:
                            os.write(2, b"".join(kept))
