"""Shared fixtures: real data from ../shared/data, the PulseAudio virtual microphone/speaker."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AUDIO_ENGINE_SHARED_DATA", REPO.parent / "shared" / "data"))
SPEECH = SHARED / "speech"
EVENTS = SHARED / "events"
VAD = SHARED / "vad"
SAMPLE = REPO / "engine" / "data" / "samples" / "jfk.flac"
SINK = "virtual_speaker"


def pytest_collection_modifyitems(config, items):
    """Tests that kill the sound server run after all the others, so that no other test meets a
    server that has just been restarted."""
    items.sort(key=lambda it: it.get_closest_marker("restarts_audio_server") is not None)


def shared(path: str) -> Path:
    p = SHARED / path
    if not p.exists():
        pytest.skip(f"shared test data not found: {p}")
    return p


def _pulse_ready() -> bool:
    if not shutil.which("pactl"):
        return False
    r = subprocess.run(["pactl", "list", "short", "sinks"], capture_output=True, text=True)
    return r.returncode == 0 and SINK in r.stdout


@pytest.fixture(scope="session")
def pulse():
    """The PulseAudio null sink 'virtual_speaker' (started by tools/pulse_null.sh)."""
    if not _pulse_ready():
        subprocess.run(["bash", "-c", f". {REPO}/tools/pulse_null.sh"], capture_output=True)
    if not _pulse_ready():
        pytest.skip("PulseAudio with the virtual_speaker null sink is not available "
                    "(run the tests through `make test`, which starts it)")
    return SINK


class Player:
    """Plays float32 audio into the null sink with pacat, in a background thread."""

    def __init__(self, audio: np.ndarray, rate: int):
        self.audio = np.ascontiguousarray(audio if audio.ndim == 2 else audio[:, None],
                                          dtype=np.float32)
        self.rate = rate
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started_at = 0.0

    def _run(self) -> None:
        ch = self.audio.shape[1]
        p = subprocess.Popen(["pacat", "--playback", f"--device={SINK}", "--format=float32le",
                              f"--rate={self.rate}", f"--channels={ch}", "--latency-msec=20"],
                             stdin=subprocess.PIPE)
        self.started_at = time.monotonic()
        assert p.stdin is not None
        p.stdin.write(self.audio.tobytes())
        p.stdin.close()
        p.wait(timeout=120)

    def start(self) -> Player:
        self.thread.start()
        return self

    def join(self) -> None:
        self.thread.join(timeout=120)


class Recorder:
    """Records the null sink's monitor (what was played) with parec."""

    def __init__(self, rate: int = 48000, channels: int = 1):
        self.rate, self.channels = rate, channels
        self.proc = subprocess.Popen(["parec", f"--device={SINK}.monitor", "--format=float32le",
                                      f"--rate={rate}", f"--channels={channels}",
                                      "--latency-msec=20"], stdout=subprocess.PIPE)
        self.chunks: list[bytes] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            b = self.proc.stdout.read(4096)
            if not b:
                break
            self.chunks.append(b)

    def stop(self) -> np.ndarray:
        self.proc.terminate()
        self.proc.wait(5)
        self.thread.join(5)
        data = np.frombuffer(b"".join(self.chunks), np.float32)
        n = len(data) // self.channels * self.channels
        return data[:n].reshape(-1, self.channels)


def best_alignment(ref: np.ndarray, got: np.ndarray) -> tuple[int, float]:
    """Lag of ``ref`` inside ``got`` and the normalised cross-correlation at that lag."""
    from scipy.signal import correlate

    c = correlate(got, ref, mode="valid", method="fft")
    lag = int(np.argmax(np.abs(c)))
    seg = got[lag:lag + len(ref)]
    ncc = float(np.dot(seg, ref) / (np.linalg.norm(seg) * np.linalg.norm(ref) + 1e-12))
    return lag, ncc


def load_mono(path: Path, rate: int | None = None) -> tuple[np.ndarray, int]:
    import soundfile as sf
    from scipy.signal import resample_poly

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if rate and rate != sr:
        g = np.gcd(rate, sr)
        x = resample_poly(x, rate // g, sr // g).astype(np.float32)
        sr = rate
    return x, sr
