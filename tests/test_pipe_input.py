"""``--input -``: WAV or raw PCM from a pipe (arecord, ffmpeg -f wav -, sox) into a graph."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from engine.pipe_input import PcmFormat

from .conftest import REPO, shared

CLI = [sys.executable, "-m", "engine.cli"]
VAD = str(REPO / "graphs" / "vad_monitor.toml")
LOG_TO_STDOUT = ["--set", 'log.path="-"', "--quiet"]


def _starts(stdout: str) -> list[int]:
    return [d["sample"] for d in map(json.loads, (x for x in stdout.splitlines()
                                                  if x.startswith("{")))
            if d["type"] == "vad.speech_started"]


@pytest.fixture(scope="module")
def jfk():
    x, rate = sf.read(str(shared("speech/jfk.flac")), dtype="float32", always_2d=True)
    return x, rate


@pytest.fixture(scope="module")
def from_file(tmp_path_factory):
    """Speech starts with the file given as --input FILE (the reference)."""
    r = subprocess.run([*CLI, "run", VAD, "--input", str(shared("speech/jfk.flac")), "--fast",
                        *LOG_TO_STDOUT], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path_factory.mktemp("ref"))
    assert r.returncode == 0, r.stderr
    starts = _starts(r.stdout)
    assert len(starts) >= 3
    return starts


def test_decode_matches_libsndfile_for_every_format(tmp_path, jfk):
    """Each --raw-format decodes as libsndfile reads the same bytes."""
    x = jfk[0][:4000]
    for fmt, subtype in (("s16le", "PCM_16"), ("s24le", "PCM_24"), ("s32le", "PCM_32"),
                         ("f32le", "FLOAT")):
        path = tmp_path / f"{fmt}.raw"
        sf.write(str(path), x, 44100, subtype=subtype, format="RAW", endian="LITTLE")
        ref = sf.read(str(path), samplerate=44100, channels=2, subtype=subtype, format="RAW",
                      endian="LITTLE", dtype="float32")[0]
        got = PcmFormat(44100, 2, fmt).decode(path.read_bytes())
        np.testing.assert_allclose(got, ref, atol=1e-7, err_msg=fmt)


@pytest.mark.parametrize("kind", ["wav24", "raw16", "raw_file"])
def test_piped_audio_gives_the_same_speech_as_the_file(tmp_path, jfk, from_file, kind):
    """A 44.1 kHz stereo WAV (its 24-bit header read from the pipe) or raw 16-bit PCM with
    --raw-rate / --raw-channels (piped, or a .raw file): the same speech starts as --input
    FILE, within 10 ms."""
    x, rate = jfk
    data = tmp_path / "in"
    extra: list[str] = []
    if kind == "wav24":
        sf.write(str(data), x, rate, subtype="PCM_24", format="WAV")
    else:
        (np.clip(x, -1, 32767 / 32768) * 32768).astype("<i2").tofile(data)
        extra = ["--raw-rate", str(rate), "--raw-channels", "2"]
    if kind == "raw_file":
        data.rename(tmp_path / "in.raw")
        r = subprocess.run([*CLI, "run", VAD, "--input", str(tmp_path / "in.raw"), "--fast",
                            *extra, *LOG_TO_STDOUT], capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
    else:
        with open(data, "rb") as stdin:
            r = subprocess.run([*CLI, "run", VAD, "--input", "-", *extra, *LOG_TO_STDOUT],
                               stdin=stdin, capture_output=True, text=True, timeout=120,
                               cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = _starts(r.stdout)
    assert len(got) == len(from_file) and \
        max(abs(a - b) for a, b in zip(got, from_file, strict=True)) <= 160, (got, from_file)


def test_a_live_pipe_is_processed_as_it_arrives(tmp_path, jfk):
    """Audio written in real time (as arecord does): speech events come out while the writer
    is still writing, not when the pipe closes."""
    x, rate = jfk
    pcm = (np.clip(x.mean(axis=1), -1, 32767 / 32768) * 32768).astype("<i2")
    p = subprocess.Popen([*CLI, "run", VAD, "--input", "-", "--raw-rate", str(rate),
                          *LOG_TO_STDOUT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=tmp_path)
    seen: list[float] = []

    def read() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            if b'"vad.speech_started"' in line:
                seen.append(time.monotonic())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    assert p.stdin is not None
    step = rate // 10
    for i in range(0, len(pcm), step):  # 100 ms every 100 ms
        p.stdin.write(pcm[i:i + step].tobytes())
        p.stdin.flush()
        time.sleep(0.1)
    done = time.monotonic()
    p.stdin.close()
    assert p.wait(60) == 0, p.stderr.read().decode() if p.stderr else ""
    t.join(5)
    assert len(seen) >= 3 and seen[0] < done - 5.0, (seen, done)


@pytest.mark.parametrize("data,needle", [
    (b"fLaC\x00\x00\x00\x22" + bytes(64), "compressed audio"),
    (b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x40\x1f\x00\x00"
     b"\x40\x1f\x00\x00\x01\x00\x08\x00data\xff\xff\xff\xff" + bytes(800), "8-bit pcm"),
    (b"RIFF\xff\xff\xff\xffWAVEfmt ", "header ends before its data"),
    (b"", "ended before any audio"),
])
def test_bad_pipes_are_clear_errors(tmp_path, data, needle):
    r = subprocess.run([*CLI, "run", VAD, "--input", "-", "--quiet"], input=data,
                       capture_output=True, timeout=120, cwd=tmp_path)
    err = r.stderr.decode()
    assert r.returncode == 2 and needle in err.lower() and "Traceback" not in err, err


def test_pipe_misuse_is_refused(tmp_path):
    r = subprocess.run([*CLI, "run", VAD, "--input", "-", "--loop"], input=b"",
                       capture_output=True, text=False, timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and b"--loop needs a file" in r.stderr
    r = subprocess.run([*CLI, "run", VAD, "--input", "-", "--raw-rate", "7"], input=b"",
                       capture_output=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and b"--raw-rate must be" in r.stderr
