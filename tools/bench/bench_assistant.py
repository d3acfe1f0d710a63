#!/usr/bin/env python3
"""The voice-assistant loop, measured on the real audio path (PulseAudio null sink: the
microphone is the sink's monitor, so every reply echoes into it, as on loudspeakers).

1. Turns (graphs/assistant.toml as shipped, VAD muted while replying): user utterances are
   played into the microphone one after the other; each final is answered at once with a
   recorded reply through Engine.play. The microphone's own recording (same clock as the events)
   gives the true end of each utterance and the moment the reply is heard. Per turn: end of
   speech -> final available (wall), end of speech -> reply heard, and whether any final came
   from the reply's echo.
2. Barge-in (mute unwired, a vad.speech_started callback calls Engine.stop_playback): the
   reply's own echo is the voice that interrupts it (acoustically the same as a user talking
   over it at that moment): onset of that voice -> reply silent in the recording, and the
   parts: onset -> vad.speech_started (wall) -> playback.interrupted -> silence.

    . tools/pulse_null.sh && python tools/bench/bench_assistant.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import correlate, resample_poly

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine.events import Event  # noqa: E402
from engine.graph import parse_graph  # noqa: E402
from engine.runtime import Engine  # noqa: E402

SPEECH = ROOT.parent / "shared" / "data" / "speech"
GRAPH = ROOT / "graphs" / "assistant.toml"
USERS = ["librispeech-test-clean__1089-134686-0001.flac", "ljspeech__LJ001-0008.wav",
         "pocketsphinx-cards__002.wav", "ljspeech__LJ002-0020.wav", "ljspeech__LJ002-0035.wav",
         "librispeech-test-clean__1089-134691-0000.flac"]
REPLY = "ljspeech__LJ001-0002.wav"  # 1.9 s: "in being comparatively modern"
LONG_REPLY = "ljspeech__LJ001-0001.wav"  # 9.7 s
REC = '\n[[nodes]]\nid = "rec"\ntype = "sink.array"\nin = { audio = "mic.audio" }\n'
R = 48000


def load(name: str, rate: int = R) -> tuple[np.ndarray, int]:
    x, sr = sf.read(str(SPEECH / name), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != rate:
        g = np.gcd(rate, sr)
        x = resample_poly(x, rate // g, sr // g).astype(np.float32)
    return x, rate


def speech_end(x: np.ndarray, rate: int = R) -> float:
    """Last 10 ms frame within 35 dB of the loudest one, in seconds from the start of x."""
    f = rate // 100
    n = len(x) // f
    e = 10 * np.log10(np.mean(x[: n * f].reshape(n, f) ** 2, axis=1) + 1e-12)
    return (np.flatnonzero(e > e.max() - 35)[-1] + 1) * f / rate


def find(ref: np.ndarray, got: np.ndarray, lo: int = 0) -> tuple[float, float]:
    """Where ``ref`` starts in ``got[lo:]`` (seconds on got's clock) and the match's ncc."""
    seg = got[lo:]
    if len(seg) < len(ref):
        return float("nan"), 0.0
    c = correlate(seg, ref, mode="valid", method="fft")
    k = int(np.argmax(np.abs(c)))
    s = seg[k:k + len(ref)]
    ncc = float(np.dot(s, ref) / (np.linalg.norm(s) * np.linalg.norm(ref) + 1e-12))
    return (lo + k) / R, ncc


def quiet_from(x: np.ndarray, floor: float = 1e-3, hold_s: float = 0.2) -> float:
    """Seconds into ``x`` where it falls below ``floor`` for ``hold_s`` at least (the null
    sink's silence is digital zero; speech pauses are shorter)."""
    loud = np.abs(x) > floor
    idx = np.flatnonzero(loud)
    if not len(idx):
        return 0.0
    gaps = np.flatnonzero(np.diff(idx) > hold_s * R)
    last = idx[gaps[0]] if len(gaps) else idx[-1]
    return (last + 1) / R


def play_into_mic(x: np.ndarray) -> None:
    p = subprocess.Popen(["pacat", "--playback", "--device=virtual_speaker",
                          "--format=float32le", f"--rate={R}", "--channels=1",
                          "--latency-msec=20"], stdin=subprocess.PIPE)
    assert p.stdin is not None
    p.stdin.write(x.astype(np.float32).tobytes())
    p.stdin.close()
    p.wait(60)


def glitches(st: dict) -> dict:
    mic, spk = st["nodes"]["mic"], st["nodes"]["speaker"]
    drops = {k: v["queue_drops"] for k, v in st["nodes"].items() if v.get("queue_drops")}
    return {"node_cpu_max_ms": {k: v["cpu_max_ms"] for k, v in st["nodes"].items()},
            "engine_overhead_max_ms": st["engine_overhead"]["max_ms"],
            "speaker_granted_latency_s": spk.get("granted_latency_s"),
            "mic_input_overflows": mic.get("input_overflows"),
            "mic_ring_overflow_frames": mic.get("ring_overflow_frames"),
            "speaker_output_underflows": spk.get("output_underflows"),
            "speaker_dropped_frames": spk.get("dropped_frames"), "queue_drops": drops,
            "xrun_events": st["events"].get("engine.xrun", 0)}


def turns(over: dict) -> dict:
    eng = Engine(parse_graph(GRAPH.read_text() + REC, str(GRAPH), over))
    reply, rr = load(REPLY, 22050)
    reply48, _ = load(REPLY)
    finals: list[Event] = []
    done = threading.Event()

    def on_final(ev: Event) -> None:
        finals.append(ev)
        if ev.last and ev.text:
            eng.play(reply, rate=rr)

    eng.on("transcript.final", on_final)
    eng.on("playback.finished", lambda ev: done.set())
    xruns: list[str] = []
    eng.on("engine.xrun", lambda ev: xruns.append(f"{ev.kind} at {ev.time_s:.2f} s"))
    users = [load(u) for u in USERS]
    with eng:
        time.sleep(1.0)
        sent = []  # the graph's clock when each utterance went to the sound server
        for x, _ in users:
            done.clear()
            sent.append(eng.audio_seconds)
            play_into_mic(x)
            done.wait(15)
            time.sleep(1.0)  # the user waits a moment after the reply
        time.sleep(1.0)
        rec = eng.node("rec").audio[:, 0]
    st = eng.stats()
    rows = []
    for (x, _), name, t0 in zip(users, USERS, sent, strict=True):
        lo = max(int((t0 - 0.2) * R), 0)
        at, ncc = find(x, rec[:lo + len(x) + R], lo)
        end = at + speech_end(x)
        lo = int((at + len(x) / R) * R)
        mine = [f for f in finals if abs(f.speech_end_sample / f.sample_rate - end) < 1.0]
        f = mine[-1] if mine else None
        row = {"user": name, "ncc": round(ncc, 3), "speech_end_s": round(end, 3),
               "text": f.text if f else None}
        if f is not None:
            w = eng.wall_time_of(end)
            row["final_after_end_s"] = round(f.wall_time - w, 3) if w else None
            heard, rn = find(reply48, rec[: lo + 6 * R], int(end * R))
            row["reply_heard_after_end_s"] = round(heard - end, 3) if rn > 0.5 else None
            row["reply_ncc"] = round(rn, 3)
            lo = max(lo, int((heard + len(reply48) / R) * R)) if rn > 0.5 else lo
        rows.append(row)
    replies = [(r["reply_heard_after_end_s"] + r["speech_end_s"]) for r in rows
               if r.get("reply_heard_after_end_s") is not None]
    echo = [f.text for f in finals
            if any(a - 0.1 <= f.speech_end_sample / f.sample_rate <= a + 2.3 for a in replies)]
    lat = [r["final_after_end_s"] for r in rows if r.get("final_after_end_s") is not None]
    rep = [r["reply_heard_after_end_s"] for r in rows if r.get("reply_heard_after_end_s")]
    return {"rows": rows, "finals": len(finals), "echo_finals": echo,
            "final_after_end_p50_s": round(float(np.median(lat)), 3) if lat else None,
            "final_after_end_max_s": round(float(np.max(lat)), 3) if lat else None,
            "reply_heard_after_end_p50_s": round(float(np.median(rep)), 3) if rep else None,
            "reply_heard_after_end_max_s": round(float(np.max(rep)), 3) if rep else None,
            "engine_latency": st["latency"].get("transcript.final"),
            "muted_windows": st["nodes"]["vad"]["muted_windows"], "glitches": glitches(st),
            "xruns": xruns, "finals_detail": [(f.text, round(f.time_s, 2),
                                                 round(f.avg_logprob, 2)) for f in finals]}


def barge_in(over: dict, n: int = 5) -> dict:
    text = GRAPH.read_text().replace(', mute = "reply.events"', "") + REC
    eng = Engine(parse_graph(text, str(GRAPH), over))
    reply, rr = load(LONG_REPLY, 22050)
    reply48, _ = load(LONG_REPLY)
    heard: list[Event] = []
    cut: list[Event] = []
    playing = threading.Event()
    calls: list[float] = []

    def on_speech(ev: Event) -> None:
        if playing.is_set():
            heard.append(ev)
            eng.stop_playback()
            calls.append(time.monotonic())
            playing.clear()

    eng.on("vad.speech_started", on_speech)
    eng.on("playback.interrupted", cut.append)
    began: list[Event] = []
    eng.on("playback.started", began.append)
    with eng:
        time.sleep(1.0)
        for _ in range(n):
            playing.set()
            eng.play(reply, rate=rr)
            time.sleep(3.0)
        time.sleep(0.5)
        rec = eng.node("rec").audio[:, 0]
        onsets_wall = []
        rows = []
        head = reply48[:int(0.25 * R)]  # what was heard before the cut
        for b in began:
            c = next((e for e in cut if e.clip == b.clip), None)
            ev = next((e for e in heard if e.wall_time >= b.wall_time), None)
            if c is None or ev is None:
                rows.append({"clip": b.clip, "interrupted": False})
                continue
            t_call = calls[heard.index(ev)]
            lo = max(int((b.time_s - 0.1) * R), 0)
            at, ncc = find(head, rec[:lo + R], lo)  # heard within a second of its start
            silent = at + quiet_from(rec[int(at * R): int((at + 3) * R)])
            w = eng.wall_time_of(at)
            onsets_wall.append(w)
            rows.append({"clip": b.clip, "ncc": round(ncc, 3), "onset_s": round(at, 3),
                         "heard_after_start_s": round(at - b.time_s, 3),
                         "silent_after_onset_s": round(silent - at, 3),
                         "vad_event_after_onset_s": round(ev.wall_time - w, 3) if w else None,
                         "stop_call_after_event_s": round(t_call - ev.wall_time, 4),
                         "cut_after_onset_graph_s": round(c.time_s - at, 3),
                         "silent_after_cut_s": round(silent - c.time_s, 3)})
    st = eng.stats()
    lat = [r["silent_after_onset_s"] for r in rows if "silent_after_onset_s" in r]
    return {"rows": rows, "barge_in_p50_s": round(float(np.median(lat)), 3) if lat else None,
            "barge_in_max_s": round(float(np.max(lat)), 3) if lat else None,
            "glitches": glitches(st)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--prime-ms", type=float, help="the speaker's prime_ms (graph's if not)")
    ap.add_argument("--latency", choices=("low", "high"), help="the speaker's latency hint")
    ap.add_argument("--max-latency-ms", type=float, help="the speaker's max_latency_ms")
    ap.add_argument("--only", choices=("turns", "barge_in"))
    a = ap.parse_args()
    spk = {k: v for k, v in (("prime_ms", a.prime_ms), ("latency", a.latency),
                             ("max_latency_ms", a.max_latency_ms)) if v is not None}
    over = {"speaker": spk} if spk else {}
    out = {}
    if a.only != "barge_in":
        out["turns"] = turns(over)
    if a.only != "turns":
        out["barge_in"] = barge_in(over)
    print(json.dumps(out, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
