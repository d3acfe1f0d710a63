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

from engine.pcm import PcmFormat

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
    for fmt, subtype in (("u8", "PCM_U8"), ("s16le", "PCM_16"), ("s24le", "PCM_24"),
                         ("s32le", "PCM_32"), ("f32le", "FLOAT")):
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
    (b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00\x07\x00\x01\x00\x40\x1f\x00\x00"
     b"\x40\x1f\x00\x00\x01\x00\x08\x00data\xff\xff\xff\xff" + bytes(800), "\u00b5-law"),
    (b"RIFF\xff\xff\xff\xffWAVEfmt ", "header ends before its data"),
    (b"", "ended before any audio"),
])
def test_bad_pipes_are_clear_errors(tmp_path, data, needle):
    r = subprocess.run([*CLI, "run", VAD, "--input", "-", "--quiet"], input=data,
                       capture_output=True, timeout=120, cwd=tmp_path)
    err = r.stderr.decode()
    assert r.returncode == 2 and needle in err.lower() and "Traceback" not in err, err


def test_pipe_misuse_is_refused(tmp_path):
    r = subprocess.run([*CLI, "run", VAD, "--input", str(shared("speech/jfk.flac")),
                        "--raw-rate", "8000"], capture_output=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and b"--raw-rate: for headerless PCM only" in r.stderr, r.stderr
    r = subprocess.run([*CLI, "run", VAD, "--input", "-", "--loop"], input=b"",
                       capture_output=True, text=False, timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and b"--loop needs a file" in r.stderr
    r = subprocess.run([*CLI, "run", VAD, "--input", "-", "--raw-rate", "7"], input=b"",
                       capture_output=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and b"--raw-rate must be" in r.stderr


def _frames_through(tmp_path, data: bytes, *args: str) -> tuple[int, str]:
    """Frames a graph got from ``data`` piped in (a 16 kHz graph, no resampling), and stderr."""
    g, out = tmp_path / "g.toml", tmp_path / "out.wav"
    g.write_text('[[nodes]]\nid="mic"\ntype="source.microphone"\nparams={sample_rate=16000}\n'
                 '[[nodes]]\nid="rec"\ntype="sink.wav"\nin={audio="mic.audio"}\n'
                 f'params={{path="{out}"}}\n')
    r = subprocess.run([*CLI, "run", str(g), "--input", "-", "--fast", "--quiet", *args],
                       input=data, capture_output=True, timeout=60, cwd=tmp_path)
    err = r.stderr.decode()
    assert r.returncode == 0, err
    return sf.info(str(out)).frames, err


def test_wav_data_size_is_obeyed_and_rf64_read(tmp_path):
    """A WAV whose data size is real stops there (a LIST chunk after the data was played as
    a click of header bytes); RF64 (sizes in its ds64 chunk) streams to the end of the pipe;
    a raw pipe shorter than a WAV header still counts."""
    x = (0.1 * np.sin(np.arange(16000) / 5)).astype(np.float32)
    wav = tmp_path / "a.wav"
    sf.write(str(wav), x, 16000, subtype="PCM_16")
    data = wav.read_bytes() + b"LIST" + (2040).to_bytes(4, "little") + b"xxxx" * 510
    assert _frames_through(tmp_path, data)[0] == 16000
    sf.write(str(tmp_path / "a.rf64"), x, 16000, subtype="PCM_16", format="RF64")
    assert (tmp_path / "a.rf64").read_bytes()[:4] == b"RF64"
    assert _frames_through(tmp_path, (tmp_path / "a.rf64").read_bytes())[0] == 16000
    assert _frames_through(tmp_path, bytes(6))[0] == 3  # three s16 frames


WRITER = """
import struct, sys, time
time.sleep(1.0)  # a writer that starts late (arecord opening its device, ffmpeg its input)
out = sys.stdout.buffer
fmt = struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
out.write(b"RIFF\\xff\\xff\\xff\\xffWAVEfmt " + fmt + b"data\\xff\\xff\\xff\\xff")
for _ in range(1000):  # 20 ms blocks in real time
    out.write(bytes(640))
    out.flush()
    time.sleep(0.02)
"""


def test_run_stopped_while_the_writer_writes_exits_cleanly(tmp_path):
    """--duration ends the run while a live writer is still writing: exit 0 (the reader
    blocked in a buffered stdin read made Python abort at exit with status 134)."""
    for _ in range(2):
        writer = subprocess.Popen([sys.executable, "-c", WRITER], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        r = subprocess.run([*CLI, "run", VAD, "--input", "-", "--duration", "1", "--quiet"],
                           stdin=writer.stdout, capture_output=True, text=True, timeout=60,
                           cwd=tmp_path)
        writer.kill()
        writer.wait()
        assert r.returncode == 0 and "Fatal" not in r.stderr, r.stderr


def test_a_pipe_runs_in_real_time_unless_fast(tmp_path):
    """`cat file |` without --fast is taken in real time, like --input FILE; with --fast as
    fast as it goes."""
    data = bytes(2 * 16000 * 2)  # 2 s of s16 silence, all in the pipe at once
    times = {}
    for mode in ("realtime", "fast"):
        t0 = time.monotonic()
        r = subprocess.run([*CLI, "run", VAD, "--input", "-", "--quiet"]
                           + (["--fast"] if mode == "fast" else []), input=data,
                           capture_output=True, timeout=60, cwd=tmp_path)
        times[mode] = time.monotonic() - t0
        assert r.returncode == 0, r.stderr.decode()
    assert times["realtime"] > 1.9 and times["realtime"] > times["fast"] + 1.2, times
