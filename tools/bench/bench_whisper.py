"""Whisper accuracy and speed: our ONNX conversion vs faster-whisper on the same weights.

For each model (default ``whisper-tiny.en`` and ``whisper-base``) and each utterance of
``/work/shared/data/speech`` (``transcripts.tsv``), transcribes the whole utterance greedily
(beam 1, temperature 0, no timestamps, no previous-text conditioning, no VAD) with:

* ``fw-f32``: faster-whisper / CTranslate2, compute type float32 (the reference);
* ``fw-int8``: faster-whisper, compute type int8;
* ``onnx-30s``: our ONNX model, encoder on the mel zero-padded to 30 s (as faster-whisper);
* ``onnx-trim``: our ONNX model, encoder on the real length plus ``--tail`` s of zero mel, with
  the fallback to the 30 s window when that decode loops (``WhisperOnnx.transcribe``);
* ``onnx-int8-30s`` / ``onnx-int8-trim`` (with ``--int8``): the dynamically quantised conversion.

Reports WER against the references (lowercase, punctuation and hyphens removed, numbers spelt
out, spaces collapsed), agreement with ``fw-f32`` (identical text), total time (mel + encoder +
decoder, after a warm-up) and its ratio to ``fw-f32``. Markdown table on stdout; ``--json PATH``
writes every number and every hypothesis.

Usage: ``python tools/bench/bench_whisper.py [--models whisper-tiny.en whisper-base]
[--threads 1] [--tail 3.0] [--int8] [--limit N] [--json out.json]``
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from math import gcd
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

DATA = Path("/work/shared/data/speech")
TRIM_TAIL_S = 3.0

from engine.metrics import normalize, wer  # noqa: E402,F401


def load_audio(path: Path) -> np.ndarray:
    """Mono float32 16 kHz (``.raw`` is s16le mono 16 kHz)."""
    if path.suffix == ".raw":
        return np.fromfile(path, "<i2").astype(np.float32) / 32768.0
    import soundfile as sf
    from scipy.signal import resample_poly

    a, sr = sf.read(str(path), dtype="float32", always_2d=True)
    a = a.mean(axis=1)
    if sr != 16000:
        g = gcd(sr, 16000)
        a = resample_poly(a, 16000 // g, sr // g)
    return np.ascontiguousarray(a, dtype=np.float32)


def load_corpus(limit: int | None = None) -> list[tuple[str, str, np.ndarray]]:
    rows = []
    with open(DATA / "transcripts.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            rows.append((row["filename"], row["reference_text"],
                         load_audio(DATA / row["filename"])))
    return rows[:limit] if limit else rows


def run_faster_whisper(ct2_dir: Path, compute_type: str, threads: int, corpus, language):
    from faster_whisper import WhisperModel

    model = WhisperModel(str(ct2_dir), device="cpu", compute_type=compute_type,
                         cpu_threads=threads)

    def one(audio):
        segs, _ = model.transcribe(audio, beam_size=1, temperature=0, without_timestamps=True,
                                   condition_on_previous_text=False, vad_filter=False,
                                   language=language)
        return " ".join(s.text.strip() for s in segs).strip()

    one(corpus[0][2])  # warm-up
    hyps, t0 = [], time.perf_counter()
    for _, _, audio in corpus:
        hyps.append(one(audio))
    return hyps, time.perf_counter() - t0, 0


def run_onnx(folder: Path, threads: int, corpus, language, pad_to_30s: bool, tail: float):
    from engine.models.whisper_onnx import WhisperOnnx

    model = WhisperOnnx(folder, threads=threads)
    fallbacks = 0

    def one(audio):
        nonlocal fallbacks
        r = model.transcribe(audio, language=language, pad_to_30s=pad_to_30s, tail_s=tail,
                             max_tokens=448)
        fallbacks += r.fallback
        return r.text

    one(corpus[0][2])
    fallbacks = 0
    hyps, t0 = [], time.perf_counter()
    for _, _, audio in corpus:
        hyps.append(one(audio))
    return hyps, time.perf_counter() - t0, fallbacks


def ensure_converted(name: str, int8: bool, cache: Path) -> Path:
    from engine.models.manifest import models_dir
    from engine.models.whisper_convert import convert_whisper, converted_ok

    src = models_dir() / name / "ct2"
    out = models_dir() / name if not int8 else cache / f"{name}-int8"
    if not converted_ok(out):
        print(f"converting {name}{' (int8)' if int8 else ''} into {out}", file=sys.stderr)
        convert_whisper(src, out, quantize="int8" if int8 else None,
                        log=lambda m: print(m, file=sys.stderr))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["whisper-tiny.en", "whisper-base"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tail", type=float, default=TRIM_TAIL_S,
                    help="seconds of zero mel appended for the trimmed encoder (default 3)")
    ap.add_argument("--int8", action="store_true", help="also bench the int8 ONNX conversion")
    ap.add_argument("--limit", type=int, default=None, help="first N utterances only")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "whisper-onnx-bench"))
    ap.add_argument("--json", default=None, help="write all results to this JSON file")
    args = ap.parse_args(argv)

    from engine.models.manifest import models_dir

    corpus = load_corpus(args.limit)
    refs = [r for _, r, _ in corpus]
    audio_s = sum(len(a) for _, _, a in corpus) / 16000
    cache = Path(args.cache)
    results: dict = {"utterances": len(corpus), "audio_seconds": round(audio_s, 2),
                     "threads": args.threads, "tail_s": args.tail, "models": {}}
    lines = [f"{len(corpus)} utterances, {audio_s:.1f} s of audio, {args.threads} thread(s); "
             "time = mel + encoder + decoder for all utterances",
             "",
             "| model | system | WER % | same text as fw-f32 | time s | time / fw-f32 | RTF "
             "| 30 s fallbacks |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name in args.models:
        ct2 = models_dir() / name / "ct2"
        if not (ct2 / "model.bin").exists():
            print(f"skipping {name}: {ct2} not installed", file=sys.stderr)
            continue
        language = "en"  # the corpus is English; English-only models ignore it
        systems: dict[str, tuple[list[str], float, int]] = {}
        systems["fw-f32"] = run_faster_whisper(ct2, "float32", args.threads, corpus, language)
        systems["fw-int8"] = run_faster_whisper(ct2, "int8", args.threads, corpus, language)
        folder = ensure_converted(name, False, cache)
        systems["onnx-30s"] = run_onnx(folder, args.threads, corpus, language, True, args.tail)
        systems["onnx-trim"] = run_onnx(folder, args.threads, corpus, language, False, args.tail)
        if args.int8:
            qfolder = ensure_converted(name, True, cache)
            systems["onnx-int8-30s"] = run_onnx(qfolder, args.threads, corpus, language, True,
                                                args.tail)
            systems["onnx-int8-trim"] = run_onnx(qfolder, args.threads, corpus, language, False,
                                                 args.tail)
        base_hyps, base_t, _ = systems["fw-f32"]
        results["models"][name] = {}
        for sys_name, (hyps, t, fallbacks) in systems.items():
            same = sum(h == b for h, b in zip(hyps, base_hyps, strict=True))
            row = {"wer": round(wer(refs, hyps), 2), "same_text": same,
                   "same_text_pct": round(100.0 * same / len(hyps), 1), "time_s": round(t, 3),
                   "time_ratio": round(t / base_t, 3), "rtf": round(t / audio_s, 4),
                   "fallbacks_to_30s": fallbacks,
                   "hypotheses": dict(zip((f for f, _, _ in corpus), hyps, strict=True))}
            results["models"][name][sys_name] = row
            lines.append(f"| {name} | {sys_name} | {row['wer']:.2f} | {same}/{len(hyps)} "
                         f"({row['same_text_pct']:.0f}%) | {t:.2f} | {row['time_ratio']:.2f} | "
                         f"{row['rtf']:.3f} | {fallbacks} |")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
