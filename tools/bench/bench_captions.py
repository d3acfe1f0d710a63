#!/usr/bin/env python3
"""Live captions, measured: WER of streaming finals, latency and cost.

1. Streaming WER: a session of all utterances of ../shared/data/speech, 1.5 s of silence
   around each (a person pausing between sentences), through graphs/live_captions.toml as fast as
   possible; each final is attributed to the utterance it overlaps most. Also each file streamed
   alone (speech from its first sample, no pre-roll). In the same run: whole-utterance decoding
   with our ONNX model (trimmed encoder) and faster-whisper on the same CTranslate2 weights
   (greedy, no VAD, no previous-text conditioning).
2. Latency: the same session replayed in real time; for each utterance, the time from its true
   end (energy offset of the clean recording) to its last transcript.final, and from its true
   start to the first partial. The ASR worker's real-time factor in that run (partials included).
3. Cost: whole-utterance decode time of our model vs faster-whisper int8 on the same audio.

    python tools/bench/bench_captions.py [--model whisper-tiny.en] [--json PATH] [--no-realtime]
        [--no-offline] [--asr NAME=VALUE ...]   # e.g. --asr recheck_logprob=-100 to compare
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine.graph import load_graph  # noqa: E402
from engine.metrics import wer  # noqa: E402
from engine.models.manifest import models_dir  # noqa: E402
from engine.runtime import Engine  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_whisper import load_audio as load16k  # noqa: E402  (same loader as the ASR bench)

SPEECH = ROOT.parent / "shared" / "data" / "speech"
GRAPH = ROOT / "graphs" / "live_captions.toml"


def speech_bounds(x: np.ndarray, rate: int = 16000) -> tuple[float, float]:
    """First and last 10 ms frame within 35 dB of the loudest one."""
    n = len(x) // 160
    e = 10 * np.log10(np.mean(x[: n * 160].reshape(n, 160) ** 2, axis=1) + 1e-12)
    idx = np.nonzero(e > e.max() - 35)[0]
    return idx[0] * 160 / rate, (idx[-1] + 1) * 160 / rate


def rows() -> list[tuple[Path, str]]:
    with open(SPEECH / "transcripts.tsv", newline="") as f:
        return [(SPEECH / r["filename"], r["reference_text"])
                for r in csv.DictReader(f, delimiter="\t")]


#: extra asr.whisper parameters (--asr NAME=VALUE), e.g. recheck_logprob=-100 to compare
ASR_PARAMS: dict = {}


#: vad.silero parameters to change (bench_noisy_captions.py --vad: a permissive VAD)
VAD_PARAMS: dict = {}


def graph_for(model: str):
    return load_graph(GRAPH, {"asr": {"model": model, **ASR_PARAMS}, "vad": dict(VAD_PARAMS),
                              "log": {"path": "-", "include": []},
                              "subtitles": {"srt": "", "vtt": ""}})


def streaming_finals(model: str, items) -> list[str]:
    out = []
    with tempfile.TemporaryDirectory() as d:
        for path, _ in items:
            wav = Path(d) / "u.wav"
            sf.write(wav, load16k(path), 16000, subtype="FLOAT")
            eng = Engine(graph_for(model), input=wav, realtime=False)
            finals: list = []
            eng.on("transcript.final", finals.append)
            eng.run()
            out.append(" ".join(e.text for e in finals))
    return out


def offline(model: str, items) -> tuple[list[str], float, list[str], float, float]:
    from engine.models.whisper_onnx import WhisperOnnx

    m = WhisperOnnx(models_dir() / model)
    lang = None if not m.multilingual else "en"
    ours, t_ours = [], 0.0
    for path, _ in items:
        x = load16k(path)
        t0 = time.perf_counter()
        ours.append(m.transcribe(x, language=lang).text)
        t_ours += time.perf_counter() - t0
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        return ours, t_ours, [], 0.0, 0.0
    fw_texts, t_fw8 = [], 0.0
    fw = WhisperModel(str(models_dir() / model / "ct2"), device="cpu", compute_type="float32",
                      cpu_threads=1)
    fw8 = WhisperModel(str(models_dir() / model / "ct2"), device="cpu", compute_type="int8",
                       cpu_threads=1)
    kw = dict(beam_size=1, temperature=0.0, condition_on_previous_text=False,
              without_timestamps=True, vad_filter=False, language="en")
    for path, _ in items:
        x = load16k(path)
        segs, _ = fw.transcribe(x, **kw)
        fw_texts.append(" ".join(s.text.strip() for s in segs))
        t0 = time.perf_counter()
        list(fw8.transcribe(x, **kw)[0])
        t_fw8 += time.perf_counter() - t0
    return ours, t_ours, fw_texts, t_fw8, 0.0


def session(items, gap: float = 1.5) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """All utterances in one stream, ``gap`` s of silence around each (as a person pausing
    between sentences), with each utterance's true speech span in stream seconds."""
    pieces, spans = [np.zeros(int(16000 * gap), np.float32)], []
    t = gap
    for path, _ in items:
        x = load16k(path)
        a, b = speech_bounds(x)
        spans.append((t + a, t + b))
        pieces += [x, np.zeros(int(16000 * gap), np.float32)]
        t += len(x) / 16000 + gap
    return np.concatenate(pieces), spans


def run_session(model: str, audio: np.ndarray, spans, realtime: bool) -> dict:
    """Stream the session through the graph; attribute each caption to the utterance it
    overlaps most; measure latencies on the engine's clock map."""
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "session.wav"
        sf.write(wav, audio, 16000, subtype="FLOAT")
        eng = Engine(graph_for(model), input=wav, realtime=realtime)
        finals: list = []
        partials: list = []
        skipped: list = []
        eng.on("transcript.final", finals.append)
        eng.on("transcript.partial", partials.append)
        eng.on("transcript.skipped", skipped.append)
        eng.run()
        st = eng.stats()

    def owner(ev) -> int:
        s, e = ev.start_sample / 16000, ev.time_s
        ov = [max(0.0, min(e, b) - max(s, a)) for a, b in spans]
        return int(np.argmax(ov)) if ov and max(ov) > 0 else -1

    end_lat, start_lat, texts = [], [], [""] * len(spans)
    for i, (a, b) in enumerate(spans):
        mine = [f for f in finals if owner(f) == i]
        texts[i] = " ".join(f.text for f in mine).strip()
        if mine:
            end_lat.append(max(f.wall_time for f in mine) - eng.wall_time_of(b))
        first = [p for p in partials + finals if owner(p) == i]
        if first:
            start_lat.append(min(p.wall_time for p in first) - eng.wall_time_of(a))
    asr = st["nodes"]["asr"]
    out = {"texts": texts, "utterances": len(spans), "with_final": len(end_lat),
           "asr_rtf": asr["rtf"], "partials": asr["partials"],
           "partials_skipped": asr["partials_skipped"], "queue_drops": asr["queue_drops"],
           "partials_unsure": asr["partials_unsure"], "rechecks_30s": asr["rechecks_30s"],
           "fallbacks_30s": asr["fallbacks_30s"], "audio_seconds": st["audio_seconds"],
           # every caption and rejected segment: (start s, end s, text, utterance or -1, ...)
           "finals": [(f.start_sample / 16000, f.time_s, f.text, owner(f), f.avg_logprob,
                       f.no_speech_prob) for f in finals],
           "skipped": [(k.start_sample / 16000, k.time_s, k.reason, k.text, owner(k))
                       for k in skipped],
           "partial_texts": [(p.start_sample / 16000, p.time_s, p.text, owner(p))
                             for p in partials]}
    if realtime and end_lat:
        out.update(final_latency_p50_s=float(np.percentile(end_lat, 50)),
                   final_latency_p90_s=float(np.percentile(end_lat, 90)),
                   first_partial_latency_p50_s=float(np.percentile(start_lat, 50)),
                   first_partial_latency_p90_s=float(np.percentile(start_lat, 90)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--json")
    ap.add_argument("--no-realtime", action="store_true")
    ap.add_argument("--asr", action="append", default=[], metavar="NAME=VALUE",
                    help="override an asr.whisper parameter (number or word)")
    ap.add_argument("--no-offline", action="store_true",
                    help="skip per-file streaming and whole-utterance decoding")
    a = ap.parse_args()
    for kv in a.asr:
        k, _, v = kv.partition("=")
        try:
            ASR_PARAMS[k] = float(v)
        except ValueError:
            ASR_PARAMS[k] = v
    items = rows()
    refs = [r for _, r in items]
    res: dict = {"model": a.model, "utterances": len(items)}
    audio, spans = session(items)
    res["session"] = run_session(a.model, audio, spans, realtime=False)
    res["wer_streaming_finals"] = wer(refs, res["session"]["texts"])
    fw = None
    if not a.no_offline:
        res["wer_streaming_per_file"] = wer(refs, streaming_finals(a.model, items))
        ours, t_ours, fw, t_fw8, _ = offline(a.model, items)
        res["wer_whole_utterance_onnx"] = wer(refs, ours)
    if fw:
        res["wer_faster_whisper"] = wer(refs, fw)
        res["decode_s_ours"] = t_ours
        res["decode_s_faster_whisper_int8"] = t_fw8
    if not a.no_realtime:
        res["realtime"] = run_session(a.model, audio, spans, realtime=True)
        res["wer_streaming_realtime"] = wer(refs, res["realtime"]["texts"])
    print(f"### Live captions, {a.model}, {len(items)} utterances\n")
    print("| measure | value | target |\n|---|---|---|")
    print(f"| WER streaming finals (session of all utterances, as fast as possible) | "
          f"{res['wer_streaming_finals']:.2f} | within 1.0 of faster-whisper |")
    if "wer_streaming_per_file" in res:
        print(f"| WER streaming finals, each file alone (speech from the first sample) | "
              f"{res['wer_streaming_per_file']:.2f} | |")
    if "realtime" in res:
        w = res["wer_streaming_realtime"]
        print(f"| WER streaming finals (same session replayed in real time) | {w:.2f} | |")
    if "wer_whole_utterance_onnx" in res:
        print(f"| WER whole-utterance, our ONNX (trimmed encoder) | "
              f"{res['wer_whole_utterance_onnx']:.2f} | |")
    if fw:
        print(f"| WER faster-whisper, same weights | {res['wer_faster_whisper']:.2f} | |")
        print(f"| whole-utterance decode time: ours / faster-whisper int8 | {t_ours:.2f} s / "
              f"{t_fw8:.2f} s (ratio {t_ours / t_fw8:.2f}) | < 1 |")
    if "realtime" in res:
        r = res["realtime"]
        print(f"| final latency after end of speech p50 / p90 | {r['final_latency_p50_s']:.2f} / "
              f"{r['final_latency_p90_s']:.2f} s | <= 0.6 / 1.0 s |")
        print(f"| first partial after start of speech p50 / p90 | "
              f"{r['first_partial_latency_p50_s']:.2f} / {r['first_partial_latency_p90_s']:.2f} s"
              " | p50 <= 1.0 s |")
        print(f"| ASR worker real-time factor (with partials) | {r['asr_rtf']:.3f} | <= 0.3 |")
        print(f"| partials emitted / skipped (behind) / not shown (unsure), queue drops | "
              f"{r['partials']} / {r['partials_skipped']} / {r['partials_unsure']}, "
              f"{r['queue_drops']} | |")
    s = res["session"]
    print(f"| finals decoded again on the 30 s window: low confidence / loop (session) | "
          f"{s['rechecks_30s']} / {s['fallbacks_30s']} of {s['utterances']} utterances | |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
