#!/usr/bin/env python3
"""Play an audio file into the PulseAudio null sink (the virtual microphone's source).

    python tools/play_into_mic.py ../shared/data/speech/jfk.flac [--sink virtual_speaker]

Decodes with soundfile (any format libsndfile reads) and streams float32 to ``pacat``, so what
the engine's microphone hears is exactly the file's samples.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import soundfile as sf


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--sink", default="virtual_speaker")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds of silence first")
    a = ap.parse_args()
    x, sr = sf.read(a.file, dtype="float32", always_2d=True)
    import numpy as np

    if a.delay:
        x = np.concatenate([np.zeros((int(a.delay * sr), x.shape[1]), np.float32), x])
    p = subprocess.Popen(["pacat", "--playback", f"--device={a.sink}", "--format=float32le",
                          f"--rate={sr}", f"--channels={x.shape[1]}"], stdin=subprocess.PIPE)
    assert p.stdin is not None
    p.stdin.write(x.tobytes())
    p.stdin.close()
    return p.wait()


if __name__ == "__main__":
    sys.exit(main())
