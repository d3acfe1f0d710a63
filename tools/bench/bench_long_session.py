#!/usr/bin/env python3
"""Live captions over a long session: run-on speech, cuts, subtitles a captioner would ship.

1. A 13-minute session built from every recording of ../shared/data/speech, four times in a
   seeded order: in each round half the recordings with pauses of 0.3 to 3 s, the other half
   trimmed and back to back (a reading, a fast talker: speech the VAD never stops), through
   ``graphs/live_captions.toml`` as fast as possible. Reference in the same run: each recording
   decoded alone by the same model (30 s window, no VAD), i.e. what the session could reach if
   streaming lost nothing. Reports session WER, the ratio to the reference, finals that stopped
   early (< 0.5 words per second over 3 s or more), and the subtitle cues' statistics.
2. Run-on reading: the first eight LJ Speech recordings back to back (51 s, one VAD segment
   after the first sentence) at ``max_window_s`` 15 and 10, and with the VAD splitting long
   speech (``max_speech_s`` 12): WER, and whether the finals tile the VAD segments (in order,
   no overlap, no gap).

    python tools/bench/bench_long_session.py [--json PATH] [--rounds 4]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
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
from engine.nodes.subtitles import make_cues  # noqa: E402
from engine.runtime import Engine  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_whisper import load_audio as load16k  # noqa: E402  (same loader as the ASR bench)

SPEECH = ROOT.parent / "shared" / "data" / "speech"
GRAPH = ROOT / "graphs" / "live_captions.toml"
R = 16000


def references() -> dict[str, str]:
    with open(SPEECH / "transcripts.tsv", newline="") as f:
        return {r["filename"]: r["reference_text"] for r in csv.DictReader(f, delimiter="\t")
                if not r["filename"].endswith(".raw")}


def trim(x: np.ndarray) -> np.ndarray:
    """The recording without its leading / trailing silence (50 ms kept)."""
    e = np.convolve(np.abs(x), np.ones(160) / 160, "same")
    idx = np.flatnonzero(e > 0.01)
    return x[max(0, idx[0] - 800): idx[-1] + 800] if len(idx) else x


def build_session(refs: dict[str, str], rounds: int, seed: int = 1):
    rng = random.Random(seed)
    clips = {f: load16k(SPEECH / f) for f in refs}
    out, order_all = [np.zeros(R, np.float32)], []
    for _ in range(rounds):
        order = list(refs)
        rng.shuffle(order)
        half = len(order) // 2
        for f in order[:half]:
            out += [clips[f], np.zeros(int(R * rng.choice([0.3, 0.3, 0.6, 1.0, 3.0])),
                                       np.float32)]
        out += [trim(clips[f]) for f in order[half:]]
        out.append(np.zeros(3 * R, np.float32))
        order_all += order
    return np.concatenate(out), order_all, clips


def run(x: np.ndarray, params: dict | None = None) -> tuple[list, list, dict]:
    spec = load_graph(GRAPH, {**(params or {}), "log": {"path": "-", "include": []},
                              "subtitles": {"srt": "", "vtt": ""}})
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "session.wav"
        sf.write(wav, x, R, subtype="FLOAT")
        eng = Engine(spec, input=wav, realtime=False)
        finals: list = []
        stops: list = []
        eng.on("transcript.final", finals.append)
        eng.on("vad.speech_stopped", stops.append)
        st = eng.run()
    return finals, stops, st


def early_stops(finals) -> int:
    return sum(1 for f in finals if (f.sample - f.start_sample) / R >= 3
               and len(f.text.split()) < 0.5 * (f.sample - f.start_sample) / R)


def tiles(finals, stops) -> bool:
    ordered = all(a.sample <= b.start_sample for a, b in zip(finals, finals[1:], strict=False))
    return ordered and sum(f.sample - f.start_sample for f in finals) == \
        sum(s.sample - s.start_sample for s in stops)


def cue_stats(finals) -> dict:
    cues = []
    for f in finals:
        new = make_cues(f.text, f.start_sample / R, f.sample / R)
        if cues and new and new[0].start < cues[-1].end:
            cues[-1] = type(new[0])(cues[-1].start, max(cues[-1].start + 0.001, new[0].start),
                                    cues[-1].lines)
        cues += new
    d = np.array([c.end - c.start for c in cues])
    chars = [len(line) for c in cues for line in c.lines]
    one_word = sum(1 for c in cues if len(" ".join(c.lines).split()) == 1)
    return {"cues": len(cues), "duration_min_s": float(d.min()), "duration_p50_s":
            float(np.median(d)), "duration_max_s": float(d.max()), "under_1s": int((d < 1).sum()),
            "max_chars_per_line": max(chars), "max_lines": max(len(c.lines) for c in cues),
            "one_word_cues": one_word}


def table(rows: list[list]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in body])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    refs = references()
    res: dict = {}

    # 1. the long session and its reference
    x, order, clips = build_session(refs, args.rounds)
    t0 = time.perf_counter()
    finals, stops, st = run(x)
    t_stream = time.perf_counter() - t0
    from engine.models.whisper_onnx import WhisperOnnx

    model = WhisperOnnx(models_dir() / "whisper-tiny.en")
    alone = {f: model.transcribe(clips[f], language=None, pad_to_30s=True).text for f in refs}
    ref_text = " ".join(refs[f] for f in order)
    session_wer = wer([ref_text], [" ".join(f.text for f in finals)])
    ref_wer = wer([ref_text], [" ".join(alone[f] for f in order)])
    cs = cue_stats(finals)
    res["session"] = {"audio_s": len(x) / R, "wall_s": t_stream, "wer": session_wer,
                      "reference_wer_each_alone": ref_wer, "finals": len(finals),
                      "vad_segments": len(stops), "early_stopped_finals": early_stops(finals),
                      "finals_split": st["nodes"]["asr"].get("finals_split", 0),
                      "asr_rtf": st["nodes"]["asr"]["rtf"], "cues": cs}
    print(f"## Long session ({len(x) / R / 60:.1f} min, {len(order)} recordings)\n")
    print(table([["measure", "value"],
                 ["WER, streaming finals", f"{session_wer:.2f}"],
                 ["WER, each recording decoded alone (30 s window, reference)",
                  f"{ref_wer:.2f}"],
                 ["ratio", f"{session_wer / max(ref_wer, 1e-9):.2f}"],
                 ["finals / VAD segments", f"{len(finals)} / {len(stops)}"],
                 ["finals that stopped early (< 0.5 words/s over >= 3 s)", early_stops(finals)],
                 ["finals decoded again in parts", st["nodes"]["asr"].get("finals_split", 0)],
                 ["speed", f"{len(x) / R / t_stream:.1f}x real time, ASR RTF "
                           f"{st['nodes']['asr']['rtf']}"],
                 ["cues: count, duration min / p50 / max (s)",
                  f"{cs['cues']}, {cs['duration_min_s']:.2f} / {cs['duration_p50_s']:.2f} / "
                  f"{cs['duration_max_s']:.2f}"],
                 ["cues under 1 s / of one word", f"{cs['under_1s']} / {cs['one_word_cues']}"],
                 ["longest line / most lines", f"{cs['max_chars_per_line']} / "
                                               f"{cs['max_lines']}"]]))

    # 2. run-on reading
    lj = [f"ljspeech__LJ001-000{i}.wav" for i in range(1, 9)]
    y = np.concatenate([np.zeros(R // 2, np.float32)] + [trim(clips[f]) for f in lj]
                       + [np.zeros(R, np.float32)])
    ref = " ".join(refs[f] for f in lj)
    rows = [["setting", "WER", "finals", "longest final (s)", "finals tile the VAD segments"]]
    res["run_on"] = {}
    for label, params in (("default (max_window_s 15)", None),
                          ("asr.max_window_s = 10", {"asr": {"max_window_s": 10}}),
                          ("vad.max_speech_s = 12", {"vad": {"max_speech_s": 12}})):
        fin, stp, _ = run(y, params)
        w = wer([ref], [" ".join(f.text for f in fin)])
        longest = max((f.sample - f.start_sample) / R for f in fin)
        res["run_on"][label] = {"wer": w, "finals": len(fin), "tiles": tiles(fin, stp)}
        rows.append([label, f"{w:.2f}", len(fin), f"{longest:.1f}", tiles(fin, stp)])
    print(f"\n## Run-on reading ({len(y) / R:.0f} s, LJ001-0001..0008 back to back)\n")
    print(table(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
