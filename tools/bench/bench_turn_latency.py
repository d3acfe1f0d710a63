#!/usr/bin/env python3
"""Where a voice turn's final latency goes, stage by stage (graphs/voice_turns.toml).

A session of the utterances of ../shared/data/speech (``--gap`` s of silence around each, as a
user pausing between turns) is replayed in real time through graphs/voice_turns.toml (VAD
``min_silence_ms`` 500, Whisper tiny.en, no partials). For each utterance:

a. true end of speech (energy offset of the clean recording) -> ``vad.speech_stopped`` emitted
   (the end-of-turn silence, Silero's own lag, the window and quantum);
b. ``vad.speech_stopped`` emitted -> the ASR worker starts the final's decode (queueing);
c. the final's decode (encoder / decoder calls, how many encodes: 30 s rechecks and splits);
d. ``transcript.final`` emitted -> the subscriber's callback runs (the dispatcher);

and the total, true end -> callback. The ASR node's own figures (``stats()``: ``final_ms``,
``speculative_*``) are read at the end; the encoder and decoder are timed by wrapping the model's
``encode`` / ``decode`` (a measurement, the engine is unchanged otherwise). With ``--compare
NAME=VALUE`` (repeatable) the same session is also run with those asr.whisper parameters,
interleaved with the baseline ``--repeat`` times, and the session WER of both is printed.

    python tools/bench/bench_turn_latency.py [--limit N] [--repeat 2] [--gap 1.5]
        [--compare speculative=false] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_captions import rows, session  # noqa: E402

from engine.graph import load_graph  # noqa: E402
from engine.metrics import wer  # noqa: E402
from engine.runtime import Engine  # noqa: E402

GRAPH = ROOT / "graphs" / "voice_turns.toml"
RATE = 16000


def _parse(kvs: list[str]) -> dict:
    out: dict = {}
    for kv in kvs:
        k, _, v = kv.partition("=")
        if v.lower() in ("true", "false"):
            out[k] = v.lower() == "true"
        else:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def run(audio: np.ndarray, spans, asr_params: dict) -> dict:
    """One real-time pass; per-utterance stage times in seconds."""
    over = {"asr": dict(asr_params), "turns": {"dir": ""}, "console": {"include": []}}
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "session.wav"
        sf.write(wav, audio, RATE, subtype="FLOAT")
        eng = Engine(load_graph(GRAPH, over), input=wav, realtime=True)
        eng.prepare()
        asr = eng.node("asr")
        model = asr.model
        calls: list = []  # (kind, t0, t1, frames)

        def timed(kind, fn):
            def wrapper(*a, **kw):
                t0 = time.monotonic()
                try:
                    return fn(*a, **kw)
                finally:
                    frames = a[0].shape[1] if kind == "encode" else 0
                    calls.append((kind, t0, time.monotonic(), frames))
            return wrapper

        model.encode = timed("encode", model.encode)
        model.decode = timed("decode", model.decode)
        got: dict[str, list] = {"stop": [], "final": [], "skipped": []}
        eng.on("vad.speech_stopped", lambda ev: got["stop"].append((ev, time.monotonic())))
        eng.on("transcript.final", lambda ev: got["final"].append((ev, time.monotonic())))
        eng.on("transcript.skipped", lambda ev: got["skipped"].append((ev, time.monotonic())))
        eng.run()
        st = eng.stats()["nodes"]["asr"]

    def owner(start: int, end: int) -> int:
        s, e = start / RATE, end / RATE
        ov = [max(0.0, min(e, b) - max(s, a)) for a, b in spans]
        return int(np.argmax(ov)) if ov and max(ov) > 0 else -1

    per: list[dict] = []
    texts = [""] * len(spans)
    for i, (_a, b) in enumerate(spans):
        stops = [(ev, t) for ev, t in got["stop"] if owner(ev.start_sample, ev.sample) == i]
        fins = [(ev, t) for ev, t in got["final"] if owner(ev.start_sample, ev.sample) == i]
        texts[i] = " ".join(ev.text for ev, _ in fins).strip()
        if not stops or not fins:
            continue
        stop, _ = stops[-1]
        fin, recv = max(fins, key=lambda f: f[0].wall_time)
        true_end = eng.wall_time_of(b)
        # the decode work of this final: model calls between the stop's emission (or the
        # previous final) and the final's emission
        prev = max([ev.wall_time for ev, _ in got["final"] + got["skipped"]
                    if ev.wall_time < fin.wall_time and ev is not fin] + [0.0])
        mine = [c for c in calls if c[1] >= prev and c[2] <= fin.wall_time + 1e-6]
        after = [c for c in mine if c[2] > stop.wall_time]
        enc = [c for c in mine if c[0] == "encode"]
        start = min((c[1] for c in after), default=fin.wall_time)
        per.append({
            "utt": i, "speech_s": round(b - _a, 2),
            "a_end_to_stop": stop.wall_time - true_end,
            "a_vad_audio_lag": (stop.speech_end_sample / RATE) - b,
            "b_stop_to_decode": max(0.0, start - stop.wall_time),
            "c_decode": fin.wall_time - max(start, stop.wall_time),
            "work_before_stop": sum(min(c[2], stop.wall_time) - c[1] for c in mine
                                    if c[1] < stop.wall_time),
            "encodes": len(enc), "encode_frames": [c[3] for c in enc],
            "encode_s": sum(c[2] - c[1] for c in after if c[0] == "encode"),
            "decode_s": sum(c[2] - c[1] for c in after if c[0] == "decode"),
            "d_dispatch": recv - fin.wall_time,
            "total": recv - true_end,
        })
    return {"per": per, "texts": texts, "asr": st}


def summary(per: list[dict]) -> dict:
    keys = ["a_end_to_stop", "a_vad_audio_lag", "b_stop_to_decode", "c_decode", "encode_s",
            "decode_s", "d_dispatch", "total"]
    out = {}
    for k in keys:
        v = np.array([p[k] for p in per])
        out[k] = (float(np.median(v)), float(np.percentile(v, 90)), float(v.max()))
    out["finals_encoded_more_than_once"] = sum(p["encodes"] > 1 for p in per)
    out["n"] = len(per)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="first N utterances (0: all)")
    ap.add_argument("--gap", type=float, default=1.5)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--asr", action="append", default=[], metavar="NAME=VALUE",
                    help="asr.whisper parameters of the baseline")
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=VALUE",
                    help="asr.whisper parameters of the variant run interleaved")
    ap.add_argument("--json")
    a = ap.parse_args()
    items = rows()
    if a.limit:
        items = items[: a.limit]
    refs = [r for _, r in items]
    audio, spans = session(items, gap=a.gap)
    configs = {"baseline": _parse(a.asr)}
    if a.compare:
        configs["variant"] = {**configs["baseline"], **_parse(a.compare)}
    results: dict = {k: [] for k in configs}
    for _ in range(a.repeat):
        for name, params in configs.items():
            results[name].append(run(audio, spans, params))
    out: dict = {}
    print(f"### Voice-turn latency by stage, {len(items)} utterances, gap {a.gap} s, "
          f"{a.repeat} run(s) each\n")
    hdr = "| stage (s): median / p90 / max | " + " | ".join(configs) + " |"
    print(hdr + "\n|---|" + "---|" * len(configs))
    sums = {name: summary([p for r in rs for p in r["per"]]) for name, rs in results.items()}
    labels = {"a_end_to_stop": "a. true end -> vad.speech_stopped",
              "a_vad_audio_lag": "   (VAD's speech_end after the true end, audio clock)",
              "b_stop_to_decode": "b. speech_stopped -> final's decode starts",
              "c_decode": "c. speech_stopped or decode start -> final emitted",
              "encode_s": "   of which encoder", "decode_s": "   of which decoder",
              "d_dispatch": "d. final emitted -> callback", "total": "true end -> callback"}
    for k, label in labels.items():
        cells = [" / ".join(f"{x:.3f}" for x in sums[n][k]) for n in configs]
        print(f"| {label} | " + " | ".join(cells) + " |")
    for name, rs in results.items():
        w = [wer(refs, r["texts"]) for r in rs]
        asr = rs[-1]["asr"]
        extra = {k: v for k, v in asr.items() if k.startswith(("spec", "final_", "rechecks",
                                                                 "fallbacks", "finals"))}
        print(f"\n{name} {configs[name]}: session WER {', '.join(f'{x:.2f}' for x in w)}; "
              f"finals encoded more than once {sums[name]['finals_encoded_more_than_once']}"
              f"/{sums[name]['n']}; asr {extra}")
        out[name] = {"params": configs[name], "summary": sums[name], "wer": w,
                     "runs": [{"per": r["per"], "texts": r["texts"], "asr": r["asr"]}
                              for r in rs]}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
