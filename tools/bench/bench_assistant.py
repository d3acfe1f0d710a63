#!/usr/bin/env python3
"""The voice-assistant loop, measured on the real audio path (PulseAudio null sink: the
microphone is the sink's monitor, so every reply echoes into it at full level, as on
loudspeakers, and a user utterance played into the sink is the user talking).

The graph is graphs/assistant.toml as shipped (``--mode aec``: the echo canceller ``aec``
between the microphone and the VAD, full duplex), or for comparison ``--mode half_duplex``
(the VAD deaf while a reply plays: ``follow_playback = true``) or ``--mode neither`` (the
canceller bypassed, ``bypass = true``: no canceller, full duplex). The microphone's own recording
(``rec``, same clock as the events) is the ground truth for when things were heard.

1. Turns: six user utterances played one after the other; each final is answered at once
   with a 1.9 s reply through Engine.play. Per turn: end of speech -> final available (wall),
   end of speech -> reply heard; and the finals that came from a reply's echo (which reply:
   the first plays in a fresh room, before the canceller has adapted). The ``aec`` node's
   stats (echo_reduction_db, reference_active_s) and the VAD's muted_windows.
2. Barge-in: a real user voice over a long reply (LJ001-0001, 9.7 s): 2-3 s into it a
   LibriSpeech utterance (another speaker, known transcript) is played into the microphone;
   a vad.speech_started callback calls Engine.stop_playback() while a reply plays. Trials on
   the first reply of a fresh engine (canceller not adapted) and, in one engine, after two
   full replies with no user (adapted). Per trial: the user's voice onset (first loud sample,
   found in ``rec`` by cross-correlation) -> vad.speech_started (wall) -> reply cut
   (playback.interrupted, graph clock) -> reply silent in ``rec`` (the recording less the
   user's utterance, fitted and subtracted: ``residual_after_silent_db`` checks it);
   whether the echo alone cut a reply before the
   user spoke (false barge-in, also counted over the two priming replies); the barge-in
   turn's transcript against the reference (WER, engine.metrics) and the reference words
   missing from it (AEC3 ducks what is said while the reply still plays).
3. Glitches in both parts: microphone overflows, speaker underflows, queue drops, xruns.

    . tools/pulse_null.sh && AUDIO_ENGINE_MODELS=models_onnx \\
        python tools/bench/bench_assistant.py [--mode aec|half_duplex|neither]
        [--only turns|barge_in] [--json PATH]
"""

from __future__ import annotations

import argparse
import csv
import difflib
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

from engine.errors import EngineError  # noqa: E402
from engine.events import Event  # noqa: E402
from engine.graph import parse_graph  # noqa: E402
from engine.metrics import normalize, wer  # noqa: E402
from engine.runtime import Engine  # noqa: E402

SPEECH = ROOT.parent / "shared" / "data" / "speech"
GRAPH = ROOT / "graphs" / "assistant.toml"
USERS = ["librispeech-test-clean__1089-134686-0001.flac", "ljspeech__LJ001-0008.wav",
         "pocketsphinx-cards__002.wav", "ljspeech__LJ002-0020.wav", "ljspeech__LJ002-0035.wav",
         "librispeech-test-clean__1089-134691-0000.flac"]
REPLY = "ljspeech__LJ001-0002.wav"  # 1.9 s: "in being comparatively modern"
REPLY_WORDS = {"being", "comparatively", "modern"}  # in none of USERS
LONG_REPLY = "ljspeech__LJ001-0001.wav"  # 9.7 s: "Printing, in the only sense with which..."
# the users who talk over the long reply: LibriSpeech speakers 1089 (male) and 1221 (female)
BARGE_USERS = ["librispeech-test-clean__1089-134691-0000.flac",  # 2.1 s
               "librispeech-test-clean__1089-134686-0001.flac",  # 3.3 s
               "librispeech-test-clean__1221-135766-0002.wav",  # 4.8 s
               "librispeech-test-clean__1089-134691-0001.flac",  # 5.4 s
               "tritonasr-mini_en__1089-134686-0001.wav"]  # 6.6 s
REC = '\n[[nodes]]\nid = "rec"\ntype = "sink.array"\nin = { audio = "mic.audio" }\n'
R = 48000
LOUD = 0.02  # the user's "first loud sample" (as tests/test_playback.py)


#: the graph as shipped ("aec"), half duplex, or with neither: its own switches as parameter
#: overrides (as MODES in tests/test_playback.py)
MODES = {"aec": {}, "half_duplex": {"vad": {"follow_playback": True}},
         "neither": {"aec": {"bypass": True}}}


def engine(over: dict, mode: str) -> Engine:
    """assistant.toml plus the microphone's recording, in ``mode``, with ``over`` on top."""
    return Engine(parse_graph(GRAPH.read_text() + REC, str(GRAPH), {**MODES[mode], **over}))


def references() -> dict[str, str]:
    with open(SPEECH / "transcripts.tsv", newline="") as f:
        return {r["filename"]: r["reference_text"] for r in csv.DictReader(f, delimiter="\t")}


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


def user_gain(rec: np.ndarray, x: np.ndarray, win: int = R // 20) -> float:
    """The user's gain in ``rec`` (aligned): the median of 50 ms least-squares fits where the
    user is loud (a fit over the whole is pulled off by the reply over its first part)."""
    n = len(x) // win
    xs, ys = x[:n * win].reshape(n, win), rec[:n * win].reshape(n, win)
    e = np.sum(xs * xs, axis=1)
    ok = e > win * 1e-4  # -40 dBFS
    return float(np.median(np.sum(xs * ys, axis=1)[ok] / e[ok])) if ok.any() else 1.0


def play_into_mic(x: np.ndarray) -> None:
    p = subprocess.Popen(["pacat", "--playback", "--device=virtual_speaker",
                          "--format=float32le", f"--rate={R}", "--channels=1",
                          "--latency-msec=20"], stdin=subprocess.PIPE)
    assert p.stdin is not None
    p.stdin.write(x.astype(np.float32).tobytes())
    p.stdin.close()
    p.wait(60)


def settle(eng: Engine, s: float = 1.0) -> None:
    """Wait until the graph's clock has run ``s`` seconds: the microphone's stream can take a
    moment to start, and an utterance played before it would be heard in part or not at all."""
    t0 = time.monotonic()
    while eng.audio_seconds < s and time.monotonic() - t0 < 10:
        time.sleep(0.01)


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


def glitch_counts(st: dict) -> dict:
    """The counters alone (summed over several engines by the caller)."""
    g = glitches(st)
    return {k: g[k] or 0 for k in ("mic_input_overflows", "mic_ring_overflow_frames",
                                   "speaker_output_underflows", "speaker_dropped_frames",
                                   "xrun_events")} | {"queue_drops": sum(g["queue_drops"].values())}


def aec_stats(st: dict) -> dict:
    a = st["nodes"]["aec"]
    return {k: a[k] for k in ("echo_reduction_db", "reference_active_s", "bypass")}


def p50_max(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "p50": round(float(np.median(xs)), 3),
            "max": round(float(np.max(xs)), 3)}


def turns(over: dict, mode: str) -> dict:
    eng = engine(over, mode)
    reply, rr = load(REPLY, 22050)
    reply48, _ = load(REPLY)
    finals: list[Event] = []
    done = threading.Event()

    def on_final(ev: Event) -> None:
        finals.append(ev)
        if ev.last and ev.text:
            try:
                eng.play(reply, rate=rr)
            except EngineError:  # an echo's final in the drain, the engine stopping
                pass

    eng.on("transcript.final", on_final)
    eng.on("playback.finished", lambda ev: done.set())
    xruns: list[str] = []
    eng.on("engine.xrun", lambda ev: xruns.append(f"{ev.kind} at {ev.time_s:.2f} s"))
    users = [load(u) for u in USERS]
    with eng:
        settle(eng)
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
        at, ncc = find(x, rec[:lo + len(x) + 3 * R], lo)
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
    # the reply's echo taken for a user turn: a final with the reply's words (no user says
    # them) or whose speech ended while a reply was heard (its 1.9 s and 0.4 s after);
    # "reply" says which (0: the first, in a fresh room; None: a reply not found in rec)
    echo = []
    for f in finals:
        end = f.speech_end_sample / f.sample_rate
        i = next((i for i, a in enumerate(replies) if a - 0.1 <= end <= a + 2.3), None)
        if i is not None or set(normalize(f.text).split()) & REPLY_WORDS:
            echo.append({"reply": i, "text": f.text, "end_s": round(end, 2)})
    lat = [r["final_after_end_s"] for r in rows if r.get("final_after_end_s") is not None]
    rep = [r["reply_heard_after_end_s"] for r in rows if r.get("reply_heard_after_end_s")]
    return {"mode": mode, "rows": rows, "finals": len(finals), "replies_heard": len(replies),
            "echo_finals_n": len(echo), "echo_finals": echo,
            "final_after_end_p50_s": round(float(np.median(lat)), 3) if lat else None,
            "final_after_end_max_s": round(float(np.max(lat)), 3) if lat else None,
            "reply_heard_after_end_p50_s": round(float(np.median(rep)), 3) if rep else None,
            "reply_heard_after_end_max_s": round(float(np.max(rep)), 3) if rep else None,
            "engine_latency": st["latency"].get("transcript.final"),
            "aec": aec_stats(st),
            "muted_windows": st["nodes"]["vad"]["muted_windows"],
            "glitches": glitches(st), "xruns": xruns,
            "finals_detail": [(f.text, round(f.time_s, 2), round(f.avg_logprob, 2))
                              for f in finals]}


class Session:
    """One engine on the assistant graph with the barge-in callback: vad.speech_started ->
    stop_playback() while a reply plays. Trials and priming replies, analysed after the run
    from the microphone's recording."""

    def __init__(self, over: dict, mode: str) -> None:
        self.eng = eng = engine(over, mode)
        self.reply, self.rr = load(LONG_REPLY, 22050)
        self.reply48, _ = load(LONG_REPLY)
        self.lock = threading.Lock()
        self.current: int | None = None  # the clip playing
        self.began: dict[int, Event] = {}
        self.ended: dict[int, Event] = {}
        self.cut_by: dict[int, tuple[Event, float]] = {}  # clip -> (speech_started, stop call)
        self.finals: list[Event] = []
        self.clip_done = threading.Event()
        self.new_final = threading.Event()
        self.xruns: list[str] = []
        self.trials: list[dict] = []
        self.primes: list[int] = []
        eng.on("playback.started", self._started)
        eng.on("playback.finished", self._ended)
        eng.on("playback.interrupted", self._ended)
        eng.on("vad.speech_started", self._speech)
        eng.on("transcript.final", self._final)
        eng.on("engine.xrun", lambda ev: self.xruns.append(f"{ev.kind} at {ev.time_s:.2f} s"))

    def _started(self, ev: Event) -> None:
        with self.lock:
            self.began[ev.clip] = ev
            self.current = ev.clip

    def _ended(self, ev: Event) -> None:
        with self.lock:
            self.ended[ev.clip] = ev
            if self.current == ev.clip:
                self.current = None
        self.clip_done.set()

    def _speech(self, ev: Event) -> None:
        with self.lock:
            clip = self.current
            if clip is None or clip in self.cut_by:
                return
            self.eng.stop_playback()
            self.cut_by[clip] = (ev, time.monotonic())

    def _final(self, ev: Event) -> None:
        self.finals.append(ev)
        self.new_final.set()

    def _play_reply(self) -> int:
        self.clip_done.clear()
        return self.eng.play(self.reply, rate=self.rr)

    def prime(self) -> None:
        """A full reply, nobody talking (the canceller adapts)."""
        self.primes.append(self._play_reply())
        self.clip_done.wait(15)
        time.sleep(1.0)

    def trial(self, name: str, user: np.ndarray, offset_s: float) -> None:
        clip = self._play_reply()
        t0 = time.monotonic()
        while clip not in self.began and time.monotonic() - t0 < 5:
            time.sleep(0.005)
        time.sleep(offset_s)  # after playback.started
        sent = self.eng.audio_seconds
        self.new_final.clear()
        play_into_mic(user)
        self.clip_done.wait(12)  # cut, or (no barge-in) played to its end
        self.new_final.wait(4)  # the turn's final, 0.6 s after the user stopped
        time.sleep(1.2)  # a turn split in two: its second part
        self.trials.append({"user": name, "clip": clip, "offset_s": offset_s, "sent_s": sent})

    def analyse(self, refs: dict[str, str], users: dict[str, np.ndarray]) -> dict:
        eng = self.eng
        rec = eng.node("rec").audio[:, 0]
        head = self.reply48[:R]  # the reply's first second (before anyone talks over it)
        rows = []
        for t in self.trials:
            b, e = self.began.get(t["clip"]), self.ended.get(t["clip"])
            x = users[t["user"]]
            row: dict = {"user": t["user"], "sent_after_start_s": round(t["offset_s"], 2)}
            lo = max(int((t["sent_s"] - 0.2) * R), 0)
            at, ncc = find(x, rec[:lo + len(x) + 3 * R], lo)
            onset = float(at + np.flatnonzero(np.abs(x) > LOUD)[0] / R)
            end = float(at + speech_end(x))
            row |= {"user_ncc": round(ncc, 3), "onset_s": round(onset, 3)}
            if b is None:
                rows.append(row | {"error": "the reply never started"})
                continue
            lo = max(int((b.time_s - 0.1) * R), 0)
            r_at, rn = find(head, rec[:lo + 2 * R], lo)
            row |= {"reply_ncc": round(rn, 3),
                    "reply_heard_after_start_s": round(r_at - b.time_s, 3),
                    "user_onset_into_reply_s": round(onset - r_at, 3)}
            cut = e if e is not None and e.type == "playback.interrupted" else None
            row["interrupted"] = cut is not None
            row["false_barge_in"] = cut is not None and cut.time_s < onset
            if cut is not None:
                ev, t_call = self.cut_by.get(t["clip"], (None, None))
                # the recording less the user's utterance: the reply alone (the null sink
                # mixes digitally: the user is there sample for sample, at the gain fitted)
                a = int(round(at * R))
                n = min(len(x), len(rec) - a)
                rest = rec[:a + n + 3 * R].copy()
                g = user_gain(rec[a:a + n], x[:n])
                rest[a:a + n] -= g * x[:n]
                sil = int(cut.time_s * R)  # the reply's output ended here: heard from here on
                silent = sil / R + quiet_from(rest[sil: sil + 3 * R])
                w = eng.wall_time_of(onset)
                row |= {"cut_after_onset_graph_s": round(cut.time_s - onset, 3),
                        "reply_silent_after_onset_s": round(silent - onset, 3),
                        "reply_end_by_played_after_onset_s":
                            round(r_at + cut.played / R - onset, 3),
                        "silent_after_cut_s": round(silent - cut.time_s, 3),
                        # the check: what is left after the reply went silent (dBFS)
                        "user_gain": round(g, 4),
                        "residual_after_silent_db": round(float(20 * np.log10(
                            np.sqrt(np.mean(rest[int(silent * R) + R // 10:int(end * R)] ** 2))
                            + 1e-9)), 1) if end > silent + 0.2 else None}
                if ev is not None:
                    row["vad_event_after_onset_s"] = round(ev.wall_time - w, 3) if w else None
                    row["stop_call_after_event_s"] = round(t_call - ev.wall_time, 4)
            # the barge-in turn: the finals whose speech ended in the user's utterance or
            # just after it
            mine = [f for f in self.finals if f.text
                    and onset - 0.5 <= f.speech_end_sample / f.sample_rate <= end + 1.5]
            hyp = " ".join(f.text for f in mine)
            ref = refs[t["user"]]
            rw, hw = normalize(ref).split(), normalize(hyp).split()
            sm = difflib.SequenceMatcher(a=rw, b=hw, autojunk=False)
            kept = {i for m in sm.get_matching_blocks() for i in range(m.a, m.a + m.size)}
            w_end = eng.wall_time_of(end)
            row |= {"ref": normalize(ref), "text": hyp, "finals": len(mine),
                    "wer": round(wer([ref], [hyp]), 1),
                    "lost_words": [w for i, w in enumerate(rw) if i not in kept],
                    "final_after_end_s": round(mine[-1].wall_time - w_end, 3)
                    if mine and w_end else None}
            rows.append(row)
        false_primes = [c for c in self.primes
                        if self.ended.get(c) is not None
                        and self.ended[c].type == "playback.interrupted"]
        st = eng.stats()
        return {"rows": rows, "false_barge_ins_on_priming_replies": len(false_primes),
                "priming_replies": len(self.primes),
                "aec": aec_stats(st),
                "muted_windows": st["nodes"]["vad"]["muted_windows"],
                "glitches": glitches(st), "glitch_counts": glitch_counts(st),
                "xruns": self.xruns}


def summary(rows: list[dict], refs: dict[str, str]) -> dict:
    ok = [r for r in rows if r.get("interrupted") and not r.get("false_barge_in")]
    return {"trials": len(rows), "barge_ins": len(ok),
            "false_barge_ins": sum(bool(r.get("false_barge_in")) for r in rows),
            "not_interrupted": sum(not r.get("interrupted") for r in rows),
            "onset_to_vad_event_s": p50_max([r["vad_event_after_onset_s"] for r in ok
                                             if r.get("vad_event_after_onset_s") is not None]),
            "onset_to_cut_s": p50_max([r["cut_after_onset_graph_s"] for r in ok]),
            "onset_to_reply_silent_s": p50_max([r["reply_silent_after_onset_s"] for r in ok]),
            "wer_percent": round(wer([refs[r["user"]] for r in rows],
                                     [r.get("text", "") for r in rows]), 1),
            "lost_words": sum(len(r.get("lost_words", [])) for r in rows),
            "ref_words": sum(len(r["ref"].split()) for r in rows if "ref" in r)}


def barge_in(over: dict, mode: str, n: int) -> dict:
    refs = references()
    names = BARGE_USERS[:n]
    users = {u: load(u)[0] for u in names}
    # the utterance goes to pacat this long after playback.started; its first loud sample is
    # heard ~0.5 s later (pacat's start, the clip's leading silence): user_onset_into_reply_s
    offsets = np.linspace(1.6, 2.6, len(names)) if len(names) > 1 else np.array([2.0])
    fresh_rows, fresh_aec, counts = [], [], []
    for name, off in zip(names, offsets, strict=True):  # the first reply of a fresh engine
        s = Session(over, mode)
        with s.eng:
            settle(s.eng)
            s.trial(name, users[name], float(off))
        res = s.analyse(refs, users)
        fresh_rows += res["rows"]
        fresh_aec.append(res["aec"])
        counts.append(res["glitch_counts"])
    s = Session(over, mode)  # adapted: two full replies first, then the same trials
    with s.eng:
        settle(s.eng)
        s.prime()
        s.prime()
        for name, off in zip(names, offsets, strict=True):
            s.trial(name, users[name], float(off))
    adapted = s.analyse(refs, users)
    return {"mode": mode,
            "fresh": {"summary": summary(fresh_rows, refs), "rows": fresh_rows,
                      "aec": fresh_aec,
                      "glitch_counts": {k: sum(c[k] for c in counts) for k in counts[0]}},
            "adapted": {"summary": summary(adapted["rows"], refs)} | adapted}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--mode", choices=("aec", "half_duplex", "neither"), default="aec",
                    help="the graph as shipped (aec, full duplex), the VAD deaf while "
                    "replying (half_duplex), or no canceller in full duplex (neither)")
    ap.add_argument("--trials", type=int, default=5, help="barge-in trials per condition")
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
        out["turns"] = turns(over, a.mode)
    if a.only != "turns":
        out["barge_in"] = barge_in(over, a.mode, a.trials)
    text = json.dumps(out, indent=1, default=lambda o: o.item())  # numpy scalars
    print(text)
    if a.json:
        Path(a.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
