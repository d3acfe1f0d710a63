"""Whisper: mel features, CTranslate2 -> ONNX conversion and greedy decoding vs faster-whisper.

The model tests use ``models_onnx/whisper-tiny.en`` when it is converted and verified there,
else convert its ``ct2/`` weights once per session into a temporary folder; they skip when the
CTranslate2 weights are not installed (``audio-engine models fetch whisper-tiny.en``) or when
faster-whisper (a benchmark/test-only dependency) is missing.
"""

from __future__ import annotations

import csv
import json
import shutil
from math import gcd
from pathlib import Path

import numpy as np
import pytest

from engine.dsp.whisper_mel import (
    StreamingLogMel,
    fft_numba,
    log_mel_spectrogram,
    mel_filters,
    normalize_log_mel,
    raw_log_mel,
)
from engine.errors import ModelError
from engine.metrics import wer
from engine.models.manifest import models_dir

SPEECH = Path("/work/shared/data/speech")
TINY = "whisper-tiny.en"


def _load(path: Path) -> np.ndarray:
    if path.suffix == ".raw":
        return np.fromfile(path, "<i2").astype(np.float32) / 32768.0
    sf = pytest.importorskip("soundfile")
    signal = pytest.importorskip("scipy.signal")
    a, sr = sf.read(str(path), dtype="float32", always_2d=True)
    a = a.mean(axis=1)
    if sr != 16000:
        g = gcd(sr, 16000)
        a = signal.resample_poly(a, 16000 // g, sr // g)
    return np.ascontiguousarray(a, dtype=np.float32)


@pytest.fixture(scope="module")
def speech() -> list[tuple[str, str, np.ndarray]]:
    """(file name, reference text, 16 kHz mono float32) for every utterance of the corpus."""
    tsv = SPEECH / "transcripts.tsv"
    if not tsv.exists():
        pytest.skip(f"speech corpus not found at {SPEECH}")
    with open(tsv, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [(r["filename"], r["reference_text"], _load(SPEECH / r["filename"])) for r in rows]


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """A verified ONNX conversion of whisper-tiny.en (converted once per session if needed)."""
    from engine.models.whisper_convert import convert_whisper, converted_ok

    folder = models_dir() / TINY
    if converted_ok(folder):
        return folder
    ct2 = folder / "ct2"
    if not (ct2 / "model.bin").exists():
        pytest.skip(f"{TINY} CTranslate2 weights not installed: audio-engine models fetch {TINY}")
    out = tmp_path_factory.mktemp("whisper") / TINY
    convert_whisper(ct2, out, log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def tiny(tiny_folder):
    from engine.models.whisper_onnx import WhisperOnnx

    return WhisperOnnx(tiny_folder, threads=2)


# ---------------------------------------------------------------------------------------------
# mel


def test_mel_matches_faster_whisper(speech):
    fe_mod = pytest.importorskip("faster_whisper.feature_extractor",
                                 reason="faster-whisper not installed")
    fe80 = fe_mod.FeatureExtractor(feature_size=80)
    worst = 0.0
    for name, _, audio in speech:
        ours = log_mel_spectrogram(audio, 80)
        ref = fe80(audio)
        assert ours.shape == ref.shape, name
        worst = max(worst, float(np.abs(ours - ref).max()))
    assert worst < 1e-4, worst
    # 128 bands (large-v3) and the filter bank itself
    fe128 = fe_mod.FeatureExtractor(feature_size=128)
    np.testing.assert_allclose(mel_filters(128), fe128.mel_filters, atol=1e-7)
    audio = speech[0][2]
    assert np.abs(log_mel_spectrogram(audio, 128) - fe128(audio)).max() < 1e-4


@pytest.mark.parametrize("n", [400, 512, 360, 30, 7, 1])
def test_fft_kernel_matches_numpy(n):
    """The mixed-radix Numba FFT under the log-mel (Whisper's 400-point frames) against
    numpy.fft, real and complex input."""
    rng = np.random.default_rng(n)
    for x in (rng.standard_normal(n), rng.standard_normal(n) + 1j * rng.standard_normal(n)):
        np.testing.assert_allclose(fft_numba(x), np.fft.fft(x), atol=1e-9 * max(n, 1))


@pytest.mark.parametrize("n", [1, 150, 200, 201, 359, 360, 1000, 16037])
def test_mel_short_and_odd_lengths(n):
    fe_mod = pytest.importorskip("faster_whisper.feature_extractor",
                                 reason="faster-whisper not installed")
    rng = np.random.default_rng(n)
    audio = (0.1 * rng.standard_normal(n)).astype(np.float32)
    ref = fe_mod.FeatureExtractor(feature_size=80)(audio)
    ours = log_mel_spectrogram(audio)
    assert ours.shape == ref.shape == (80, n // 160 + 1)
    assert np.abs(ours - ref).max() < 1e-4


@pytest.mark.parametrize("n", [150, 201, 520, 48000])
def test_streaming_mel_equals_whole(speech, n):
    audio = speech[0][2][:n]
    rng = np.random.default_rng(n)
    sm = StreamingLogMel(80)
    parts, i = [], 0
    while i < len(audio):
        k = int(rng.integers(1, 900))
        parts.append(sm.push(audio[i:i + k]))
        i = min(i + k, len(audio))
        # causality: frames emitted so far only need samples up to their window end
        assert sm.frames_emitted == (0 if i <= 200 else (i - 200) // 160 + 1)
    parts.append(sm.finish())
    streamed = np.concatenate(parts, axis=1)
    whole = raw_log_mel(audio)
    np.testing.assert_array_equal(streamed, whole)
    np.testing.assert_array_equal(normalize_log_mel(streamed), log_mel_spectrogram(audio))
    assert sm.frames_emitted == 0  # finish() resets for the next utterance


@pytest.mark.parametrize("n", [150, 520, 48000])
def test_streaming_mel_peek_is_finish_without_ending(speech, n):
    """peek() (the asr node's speculative final, decoded in the silence) gives what finish()
    would give at that point, and the stream goes on unchanged afterwards."""
    audio = speech[0][2][: n + 4000]
    sm = StreamingLogMel(80)
    head = sm.push(audio[:n])
    peeked = sm.peek()
    np.testing.assert_array_equal(np.concatenate([head, peeked], axis=1),
                                  raw_log_mel(audio[:n]))
    np.testing.assert_array_equal(sm.peek(), peeked)  # peeking twice changes nothing
    rest = [sm.push(audio[n:]), sm.finish()]
    np.testing.assert_array_equal(np.concatenate([head] + rest, axis=1), raw_log_mel(audio))


# ---------------------------------------------------------------------------------------------
# CTranslate2 reader and conversion


def test_ct2_reader_layout():
    from engine.models.whisper_ct2 import read_ct2_whisper, read_model_bin

    ct2 = models_dir() / TINY / "ct2"
    if not (ct2 / "model.bin").exists():
        pytest.skip(f"{TINY} not installed")
    m = read_model_bin(ct2 / "model.bin")
    assert (m.spec, m.binary_version) == ("WhisperSpec", 6)
    assert m.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    v, cfg = read_ct2_whisper(ct2)
    assert v["encoder/conv1/weight"].shape == (384, 80, 3)
    assert v["decoder/embeddings/weight"].shape == (51864, 384)
    assert v["decoder/embeddings/weight"].dtype == np.float16
    assert int(v["decoder/num_heads"]) == 6
    assert cfg["alignment_heads"] and cfg["suppress_ids_begin"] == [220, 50256]


def test_tampered_files_are_refused(tiny_folder, tmp_path):
    from engine.models.whisper_convert import converted_ok, load_converted
    from engine.models.whisper_onnx import WhisperOnnx

    folder = tmp_path / "tiny-copy"
    folder.mkdir()
    for p in tiny_folder.iterdir():
        if p.is_file():
            # large files by symlink (read-only use), small ones copied so they can be altered
            if p.stat().st_size > 4_000_000:
                (folder / p.name).symlink_to(p)
            else:
                shutil.copyfile(p, folder / p.name)
    assert converted_ok(folder)
    meta = json.loads((folder / "whisper.json").read_text())
    meta["suppress_ids"] = []
    (folder / "whisper.json").write_text(json.dumps(meta))
    assert not converted_ok(folder)
    with pytest.raises(ModelError) as e:
        WhisperOnnx(folder)
    msg = str(e.value)
    assert "whisper.json" in msg and "sha256" in msg and "not loaded" in msg
    assert "convert" in msg  # not a manifest folder: names re-running the conversion
    (folder / "checksums.json").unlink()
    with pytest.raises(ModelError, match="checksums.json is missing"):
        load_converted(folder)


def test_fix_hint_names_fetch_for_manifest_models():
    from engine.models.whisper_convert import fix_hint

    assert f"audio-engine models fetch {TINY}" in fix_hint(models_dir() / TINY)


# ---------------------------------------------------------------------------------------------
# decoding


def test_greedy_matches_faster_whisper(tiny, tiny_folder, speech):
    fw = pytest.importorskip("faster_whisper", reason="faster-whisper not installed")
    ref_model = fw.WhisperModel(str(models_dir() / TINY / "ct2"), device="cpu",
                                compute_type="float32", cpu_threads=2)
    ours, theirs, refs = [], [], []
    for _, ref, audio in speech:
        segs, _ = ref_model.transcribe(audio, beam_size=1, temperature=0,
                                       without_timestamps=True, condition_on_previous_text=False,
                                       vad_filter=False)
        theirs.append(" ".join(s.text.strip() for s in segs).strip())
        ours.append(tiny.transcribe(audio, pad_to_30s=True, max_tokens=448).text)
        refs.append(ref)
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    assert same >= 0.95 * len(speech), [(a, b) for a, b in zip(ours, theirs, strict=True)
                                        if a != b]
    assert abs(wer(refs, ours) - wer(refs, theirs)) <= 0.5


def test_decode_details(tiny, speech):
    name, _, audio = next(s for s in speech if s[0] == "jfk.flac")
    r = tiny.transcribe(audio, pad_to_30s=True, word_timestamps=True)
    assert r.text.startswith("And so my fellow Americans")
    assert r.language == "en" and 0.0 <= r.no_speech_prob < 0.2 and -0.5 < r.avg_logprob < 0
    assert r.tokens and all(t < tiny.eot for t in r.tokens)
    assert 1.0 < r.compression_ratio < 2.4
    # word timestamps: monotonic, inside the audio, and the words spell the text
    assert r.words and "".join(w.word for w in r.words).strip() == r.text
    starts = [w.start for w in r.words]
    assert starts == sorted(starts) and r.words[-1].end <= len(audio) / 16000 + 0.1
    assert all(w.end >= w.start for w in r.words)
    # timestamps mode: segments with increasing times, same words
    ts = tiny.transcribe(audio, pad_to_30s=True, with_timestamps=True)
    assert ts.segments and ts.tokens[0] >= tiny.timestamp_begin
    assert all(a[0] <= a[1] for a in ts.segments)
    # the trimmed encoder (real length + 3 s) also transcribes it
    trimmed = tiny.transcribe(audio, pad_to_30s=False)
    assert "ask not what your country can do for you" in trimmed.text.lower()
