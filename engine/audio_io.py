"""Reading audio files with errors a user can act on.

Every failure names the file and what is wrong with it (missing, empty, not audio, truncated,
unsupported format) as an :class:`~engine.errors.AudioFileError`; nothing raw reaches the user.
WAV/FLAC/OGG and everything else libsndfile reads; headerless ``.raw``/``.pcm`` files need their
format stated (``raw_sample_rate``, ``raw_channels``, ``raw_subtype``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import AudioFileError

RAW_EXTENSIONS = (".raw", ".pcm")


def open_audio(path: str | Path, raw_sample_rate: int = 16000, raw_channels: int = 1,
               raw_subtype: str = "PCM_16") -> sf.SoundFile:
    """Open ``path`` for streaming reads after checking that it is readable to its end."""
    p = Path(path)
    if not p.exists():
        raise AudioFileError(f"{p}: no such audio file")
    if p.is_dir():
        raise AudioFileError(f"{p}: is a folder, not an audio file")
    size = p.stat().st_size
    if size == 0:
        raise AudioFileError(f"{p}: the file is empty (0 bytes)")
    try:
        if p.suffix.lower() in RAW_EXTENSIONS:
            f = sf.SoundFile(str(p), samplerate=raw_sample_rate, channels=raw_channels,
                             subtype=raw_subtype, format="RAW", endian="LITTLE")
        else:
            f = sf.SoundFile(str(p))
    except sf.LibsndfileError as e:
        why = str(e).split(":")[-1].strip() or "unknown error"
        raise AudioFileError(
            f"{p}: not a readable audio file ({why}). Supported: WAV, FLAC, OGG/Vorbis, AIFF and "
            f"other formats libsndfile reads; headerless PCM needs a .raw extension") from None
    except (OSError, RuntimeError, TypeError, ValueError) as e:
        raise AudioFileError(f"{p}: cannot open audio file: {e}") from None
    if f.frames == 0:
        f.close()
        raise AudioFileError(f"{p}: the file holds no audio frames (header only or empty)")
    if f.samplerate <= 0 or f.channels <= 0:
        f.close()
        raise AudioFileError(f"{p}: invalid header (sample rate {f.samplerate}, "
                             f"{f.channels} channels)")
    _check_tail(f, p)
    return f


def _check_tail(f: sf.SoundFile, p: Path) -> None:
    """Read the last frames: a truncated or corrupt file fails here, not mid-stream."""
    m = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", f.extra_info, re.M)
    if m and int(m.group(2)) < int(m.group(1)):
        f.close()
        raise AudioFileError(f"{p}: the file is truncated: its header announces "
                             f"{int(m.group(1))} bytes of audio but only {int(m.group(2))} are "
                             "present; re-export or re-download it")
    n = min(f.frames, 4096)
    try:
        if f.seekable():
            f.seek(f.frames - n)
        got = f.read(n, dtype="float32", always_2d=True)
        f.seek(0)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        f.close()
        raise AudioFileError(f"{p}: the file is corrupt or truncated near its end ({e}); "
                             f"re-export or re-download it") from None
    if len(got) < n:
        f.close()
        raise AudioFileError(f"{p}: the file is truncated: its header promises {f.frames} "
                             f"frames but fewer are present; re-export or re-download it")
    if not np.all(np.isfinite(got)):
        f.close()
        raise AudioFileError(f"{p}: the file contains NaN or infinite samples")
