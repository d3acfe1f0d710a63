#!/usr/bin/env python3
"""``dsp.echo_cancel`` (WebRTC AEC3) measured offline on real recorded speech.

The echo path is SYNTHETIC: the far end (the assistant's reply) is ~33 s of real speech (LJ
Speech and a LibriVox reader, alternating, from ../shared/data/speech), played to the
``reference`` input at -26 dBFS RMS over its speech (``--far-dbfs``); the microphone gets it
convolved with a room impulse response, delayed and scaled to -22 dBFS RMS over its active
frames, plus white noise at -70 dBFS (the microphone's own floor). Rooms: a pure delay (impulse
response [1]) and exponentially decaying Gaussian noise responses with RT60 0.2, 0.4 and 0.6 s
(seed 0); echo delays (reference to echo, i.e. speaker buffer + device latencies) 30, 150 and
400 ms, and 700 ms (past the ~0.5 s AEC3 searches) without and with ``reference_delay_ms``
400. No loudspeaker non-linearity, no clock drift, no room change: a best case for the
linear echo path.

0. The node's real output lag, measured (cross-correlation peak for noise in, reference
   silent), and the same for the APM with only its high-pass filter; every output below is
   moved earlier by the measured lag before it is compared with the microphone.
1. Echo reduction (ERLE = 10 log10(microphone energy / output energy)) over the frames where the
   echo is active (within 25 dB of its level), far end only: in the first 2 s after the echo
   starts (convergence) and after; the time to 20 dB: from the echo's start to the first 1 s
   stretch in which every 0.25 s window (50 ms hops) reaches 20 dB ("never": none in the far
   end; the first single window that reaches 20 dB is in the JSON, but AEC3 suppresses hard
   for its first ~0.5 s and then leaks, so that one says little); the 10th percentile of
   the 0.25 s windows after 2 s (the leaks); the ceiling the -70 dBFS noise floor sets; and the
   node's own ``echo_reduction_db`` (the whole run). Through the real node
   (``engine.testing.run_node``, 10 ms blocks) at 16 kHz, and one 48 kHz case (the 16 kHz far
   end upsampled with ``resample_poly``, the room at 48 kHz).
2. Double talk (RT60 0.4 s, 150 ms unless ``--dt-rt60`` / ``--dt-delay``): near-end utterances
   (LibriSpeech and JFK: other speakers than the far end, with reference transcripts) added dry
   to the microphone at known times while the far end plays (looped), after 4 s of far end
   alone and 1.5 s apart, at near-to-echo ratios of 0 and -6 dB (near-end speech RMS vs the
   echo's -22 dBFS); control: the near end alone, the reference silent. WER of whisper-tiny.en
   (the engine's ONNX model, ``bench_noisy_captions.whole_utterance_wer``) on each utterance cut
   from the signal (its speech span +- 0.2 s) and decoded whole: (a) the near end alone, (b) the
   raw microphone, (c) the node's output. The near end's level change through the node is the
   least-squares gain of the near-end signal in the output (<out, ref> / <ref, ref> over the
   utterances' speech: residual echo, uncorrelated with it, does not count), with ref = the near
   end through the APM's high-pass filter alone (what a perfect canceller passes; 0 dB is no
   loss) and, for information, ref = the near end itself (the high-pass filter's phase shift
   lowers that one). Also ERLE over the far-end-only stretches of that run (outside the cut
   utterances), before the first utterance (after 2 s) and after it (re-convergence).
3. Near end alone (the control above): level change (energy over the speech spans) and the
   correlation of the output with the input and with the APM's high-pass-only output (the
   canceller's high-pass filter removes what is under ~80 Hz and shifts the phase, so the output
   is not sample-equal to the input).
4. CPU: ms of process CPU time per 10 ms frame of the node (a minimal driver, 10 ms blocks) and
   of the same livekit ``AudioProcessingModule`` called directly on the same frames (int16
   prepared in advance) in the same run, alternating, the first second of each pass excluded
   (warm-up); median over the passes; real-time factor = ms / 10. Echo in RT60 0.4 s, 150 ms.

With only 9 near-end utterances (~70 s, ~200 words) WER differences of a few points are
noise. Full run about 25 s on 2 cores; ``--quick`` (2 rooms x 2 delays, 4 utterances, one
CPU pass) well under a minute.

    AUDIO_ENGINE_MODELS=models_onnx python tools/bench/bench_echo_cancel.py [--quick]
        [--json PATH] [--model whisper-tiny.en] [--dt-rt60 0.4] [--dt-delay 150]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy.signal import correlate, fftconvolve, resample_poly

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_captions as bc  # noqa: E402
from bench_noisy_captions import whole_utterance_wer  # noqa: E402
from bench_vad import SR, active_span, table, utterances  # noqa: E402

from engine.metrics import normalize  # noqa: E402
from engine.node import AudioSpec, NodeIO  # noqa: E402
from engine.nodes.echo_cancel import EchoCancel  # noqa: E402
from engine.testing import run_node  # noqa: E402

FAR = ["ljspeech__LJ001-0001.wav", "librivox__sense_and_sensibility_01_austen_64kb-0870.wav",
       "ljspeech__LJ001-0003.wav", "librivox__sense_and_sensibility_01_austen_64kb-0890.wav"]
NEAR = ["librispeech-test-clean__1089-134686-0001.flac",
        "librispeech-test-clean__1089-134691-0000.flac",
        "librispeech-test-clean__1089-134691-0001.flac",
        "librispeech-test-clean__1221-135766-0002.wav",
        "librispeech-test-clean__1089-134686-0000.flac",
        "librispeech-test-clean__1221-135766-0001.wav",
        "librispeech-dev-clean__2412-153948-0000.flac",
        "tritonasr-mini_en__1089-134686-0001.wav", "jfk.flac"]
ECHO_DBFS = -22.0
NOISE_DBFS = -70.0
ACTIVE_BELOW_DB = 25.0  # echo frames within this much of the echo's level count for ERLE
CONVERGE_S = 2.0
WINDOW_S = 0.25
TARGET_DB = 20.0
HOLD_S = 1.0  # ... for this long in every 0.25 s window: converged
MARGIN_S = 0.2
LEAD_S = 4.0  # double talk: far end alone before the first near-end utterance
GAP_S = 1.5  # far end alone between near-end utterances
SEED = 0


def db(x: float) -> float | None:
    return 10 * math.log10(x) if x > 0 and math.isfinite(x) else None


def f1(v: float | None, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def rir(rt60: float, rate: int, seed: int = SEED) -> np.ndarray:
    """Unit-energy room response: [1] (pure delay) or Gaussian noise decaying 60 dB in rt60 s."""
    if rt60 <= 0:
        return np.ones(1, np.float32)
    n = int(rt60 * rate)
    t = np.arange(n) / rate
    h = np.random.default_rng(seed).standard_normal(n) * 10 ** (-3 * t / rt60)
    return (h / np.linalg.norm(h)).astype(np.float32)


def frame_energy(x: np.ndarray, f: int) -> np.ndarray:
    n = len(x) // f
    return np.sum(x[:n * f].astype(np.float64).reshape(n, f) ** 2, axis=1)


def make_echo(far: np.ndarray, rt60: float, delay_ms: float, rate: int) -> np.ndarray:
    """The far end through the room, delayed, at ECHO_DBFS RMS over its active frames."""
    e = fftconvolve(far, rir(rt60, rate))[:len(far)]
    d = int(round(delay_ms * rate / 1000))
    e = np.concatenate([np.zeros(d), e])[:len(far)]
    f = rate // 100
    fe = frame_energy(e, f)
    act = fe > fe.max() * 10 ** (-40 / 10)
    rms = math.sqrt(fe[act].sum() / (act.sum() * f))
    return (e * 10 ** (ECHO_DBFS / 20) / rms).astype(np.float32)


def noise(n: int, seed: int = SEED + 1) -> np.ndarray:
    return (10 ** (NOISE_DBFS / 20) * np.random.default_rng(seed).standard_normal(n)) \
        .astype(np.float32)


def echo_active(echo: np.ndarray, f: int) -> np.ndarray:
    fe = frame_energy(echo, f)
    return fe > (10 ** (ECHO_DBFS / 10)) * f * 10 ** (-ACTIVE_BELOW_DB / 10)


def run_aec(mic: np.ndarray, far: np.ndarray, rate: int, lag: int = 0,
            ref_delay_ms: float = 0.0) -> tuple[np.ndarray, dict]:
    """The node over the whole signal in 10 ms blocks; the output moved ``lag`` samples earlier
    (the measured lag of the node's output, so that it lines up with the microphone)."""
    node = EchoCancel("aec", EchoCancel.Params(reference_delay_ms=ref_delay_ms))
    r = run_node(node, {"audio": mic, "reference": far}, rate, rate // 100)
    out = r.audio["audio"][:, 0]
    if len(out) != len(mic) + node.latency_samples:  # the flush lets the delay out too
        raise RuntimeError(f"output length {len(out)} != input {len(mic)} + latency "
                           f"{node.latency_samples}")
    st = {**node.stats(), "latency_samples": node.latency_samples}
    node.close()
    return shift(out, lag)[:len(mic)], st


def shift(x: np.ndarray, lag: int) -> np.ndarray:
    """``x`` moved ``lag`` samples earlier (zeros at the end)."""
    return np.concatenate([x[lag:], np.zeros(lag, np.float32)]).astype(np.float32)


def apm_hpf_only(x: np.ndarray, rate: int) -> np.ndarray:
    """The same livekit AudioProcessingModule with only its high-pass filter on (no canceller):
    what a perfect canceller would pass of the near end."""
    from livekit import rtc

    apm = rtc.AudioProcessingModule(high_pass_filter=True)
    f = rate // 100
    x16 = np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)
    out = np.zeros(len(x), np.float32)
    for k in range(len(x) // f):
        buf = bytearray(x16[k * f:(k + 1) * f].tobytes())
        apm.process_stream(rtc.AudioFrame(buf, rate, 1, f))
        out[k * f:(k + 1) * f] = np.frombuffer(buf, np.int16) / 32768.0
    return out


def peak_lag(y: np.ndarray, x: np.ndarray, max_lag: int) -> tuple[int, float]:
    c = correlate(y, x, "full", method="fft")[len(x) - 1:len(x) - 1 + max_lag]
    lag = int(np.argmax(np.abs(c)))
    return lag, float(c[lag] / np.dot(x, x))


def measure_lag(rate: int) -> dict:
    """The node's real output lag: cross-correlation peak of its output with its input for 2 s of
    noise (band-limited to 8 kHz, as the bench's speech), reference silent; the same for the
    APM with its high-pass filter only."""
    x = 0.05 * np.random.default_rng(SEED + 2).standard_normal(2 * SR)
    if rate != SR:
        x = resample_poly(x, rate // SR, 1)
    x = x.astype(np.float32)
    y, st = run_aec(x, np.zeros_like(x), rate)
    lag, gain = peak_lag(y, x, rate // 20)
    hlag, hgain = peak_lag(apm_hpf_only(x, rate), x, rate // 20)
    return {"rate": rate, "lag_samples": lag, "lag_ms": 1000 * lag / rate, "peak_gain": gain,
            "hpf_only_lag_samples": hlag, "hpf_only_peak_gain": hgain,
            "node_latency_samples": st["latency_samples"]}


class Recorder:
    """A Whisper model that keeps the texts it decoded (for the JSON)."""

    def __init__(self, model):
        self.model = model
        self.texts: list[str] = []

    def transcribe(self, x, language=None):
        r = self.model.transcribe(x, language=language)
        self.texts.append(r.text)
        return r

    def wer(self, x: np.ndarray, cuts, refs) -> tuple[float, list[str]]:
        w = whole_utterance_wer(self, x, cuts, refs)
        return w, self.texts[-len(refs):]


def erle_curve(mic, out, echo, rate: int, mask: np.ndarray | None = None) -> dict:
    """ERLE over echo-active frames (and ``mask``): first CONVERGE_S s after the echo starts,
    after, time to TARGET_DB in a WINDOW_S window, p10 of the windows after, noise ceiling."""
    f = rate // 100
    act = echo_active(echo, f)
    if mask is not None:
        act &= mask[:len(act)]
    em, eo = frame_energy(mic, f), frame_energy(out, f)
    en = frame_energy(mic - echo, f)  # what is not echo: the noise floor
    t0 = int(np.flatnonzero(echo_active(echo, f))[0])
    conv = int(CONVERGE_S * 100)
    first = act.copy()
    first[t0 + conv:] = False
    after = act.copy()
    after[:t0 + conv] = False

    def erle(m):
        return db(em[m].sum() / eo[m].sum()) if m.any() else None

    w, hop = int(WINDOW_S * 100), 5
    wins = []
    for a in range(t0, len(act) - w + 1, hop):
        m = act[a:a + w]
        if m.sum() >= w // 2:
            wins.append((a, db(em[a:a + w][m].sum() / eo[a:a + w][m].sum())))
    # time to TARGET_DB: the first HOLD_S stretch in which every window reaches it (windows
    # without enough echo, between sentences, neither break nor make a stretch)
    reach = None
    hold = int(HOLD_S * 100)
    for i, (a, _) in enumerate(wins):
        vs = [v for b, v in wins[i:] if b < a + hold]
        if len(vs) >= hold // hop // 2 and all(v is not None and v >= TARGET_DB for v in vs):
            reach = (a - t0) / 100
            break
    first_win = next(((a + w - t0) / 100 for a, v in wins if v is not None and v >= TARGET_DB),
                     None)
    late = [v for a, v in wins if a >= t0 + conv and v is not None]
    return {"erle_first_2s_db": erle(first), "erle_after_2s_db": erle(after),
            "time_to_20db_s": reach, "first_window_20db_s": first_win,
            "erle_windows_after_p10_db": float(np.percentile(late, 10)) if late else None,
            "ceiling_db": db(em[act].sum() / en[act].sum()) if act.any() else None,
            "active_s": float(act.sum() / 100)}


def rooms_section(far16: np.ndarray, rt60s, delays, lags: dict[int, int]) -> list[dict]:
    out = []
    # beyond the delay AEC3 searches (~0.5 s), without and with reference_delay_ms
    cases = ([(16000, rt, d, 0.0) for rt in rt60s for d in delays]
             + [(48000, 0.4, 150.0, 0.0), (16000, 0.4, 700.0, 0.0), (16000, 0.4, 700.0, 400.0)])
    far48 = resample_poly(far16, 3, 1).astype(np.float32)
    for rate, rt, d, ref_delay in cases:
        far = far16 if rate == 16000 else far48
        echo = make_echo(far, rt, d, rate)
        mic = echo + noise(len(echo))
        t0 = time.perf_counter()
        y, st = run_aec(mic, far, rate, lags[rate], ref_delay)
        r = {"rate": rate, "rt60_s": rt, "delay_ms": d, "reference_delay_ms": ref_delay,
             **erle_curve(mic, y, echo, rate),
             "node_echo_reduction_db": st["echo_reduction_db"],
             "run_s": time.perf_counter() - t0}
        out.append(r)
        print(f"  {rate} Hz, RT60 {rt:g}, {d:g} ms: after 2 s {f1(r['erle_after_2s_db'])} dB "
              f"({r['run_s']:.1f} s)", flush=True)
    return out


def place_near(near: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int]],
                                                           list[tuple[int, int]]]:
    """Near-end track (each utterance at unit speech RMS), speech spans, whole extents."""
    pos = int(LEAD_S * SR)
    total = pos + sum(len(x) + int(GAP_S * SR) for x in near)
    track = np.zeros(total, np.float32)
    spans, extents = [], []
    for x in near:
        a, b = active_span(x)
        track[pos:pos + len(x)] = x / math.sqrt(np.mean(x[a:b] ** 2))
        spans.append((pos + a, pos + b))
        extents.append((pos, pos + len(x)))
        pos += len(x) + int(GAP_S * SR)
    return track, spans, extents


def near_gain_db(out: np.ndarray, near: np.ndarray, spans) -> float | None:
    num = sum(float(np.dot(out[a:b], near[a:b])) for a, b in spans)
    den = sum(float(np.dot(near[a:b], near[a:b])) for a, b in spans)
    return 20 * math.log10(num / den) if num > 0 else None


def double_talk(far16, near, refs, model, rt60: float, delay_ms: float, lag: dict) -> dict:
    track, spans, _ = place_near(near)
    n = len(track)
    far = np.tile(far16, n // len(far16) + 1)[:n]
    echo = make_echo(far, rt60, delay_ms, SR)
    nz = noise(n)
    cuts = [(max(0, a - int(MARGIN_S * SR)), min(n, b + int(MARGIN_S * SR))) for a, b in spans]
    # far-end-only frames: outside every near-end utterance's cut
    free = np.ones(n // 160, bool)
    for a, b in cuts:
        free[a // 160:b // 160 + 1] = False
    before = free.copy()
    before[cuts[0][0] // 160:] = False
    after = free.copy()
    after[:cuts[0][0] // 160] = False
    speech = np.zeros(n, bool)
    for a, b in spans:
        speech[a:b] = True
    overlap = float(np.mean(np.repeat(echo_active(echo, 160), 160)[speech[:n // 160 * 160]]))
    level = 10 ** (ECHO_DBFS / 20)
    clean = level * track
    t0 = time.perf_counter()
    rec = Recorder(model)
    wer_clean, texts = rec.wer(clean, cuts, refs)
    print(f"  clean decode {time.perf_counter() - t0:.1f} s", flush=True)
    res = {"rt60_s": rt60, "delay_ms": delay_ms, "utterances": len(near),
           "words": sum(len(normalize(r).split()) for r in refs), "refs": refs,
           "wer_clean": wer_clean, "texts_clean": texts,
           "near_speech_on_echo_fraction": overlap, "conditions": []}
    for label, ner, far_on in (("near end alone (no far end)", None, False),
                               ("near-to-echo 0 dB", 0.0, True),
                               ("near-to-echo -6 dB", -6.0, True)):
        nr = clean if ner is None else (level * 10 ** (ner / 20) * track).astype(np.float32)
        mic = (nr + nz + (echo if far_on else 0)).astype(np.float32)
        ref = far if far_on else np.zeros(n, np.float32)
        y, st = run_aec(mic, ref, SR, lag["lag_samples"])
        # what the APM's high-pass filter alone makes of the near end: the best case
        nr_hp = shift(apm_hpf_only(nr, SR), lag["hpf_only_lag_samples"])
        w_mic, t_mic = rec.wer(mic, cuts, refs)
        w_out, t_out = rec.wer(y, cuts, refs)
        c = {"condition": label, "near_to_echo_db": ner, "wer_mic": w_mic, "wer_out": w_out,
             "texts_mic": t_mic, "texts_out": t_out,
             "near_gain_db": near_gain_db(y, nr_hp, spans),
             "near_gain_vs_input_db": near_gain_db(y, nr, spans),
             "node_echo_reduction_db": st["echo_reduction_db"]}
        if far_on:
            mask_b = erle_curve(mic, y, echo, SR, before)
            mask_a = erle_curve(mic, y, echo, SR, after)
            c.update(erle_far_only_before_db=mask_b["erle_after_2s_db"],
                     erle_far_only_after_db=mask_a["erle_after_2s_db"])
        else:
            e_in = sum(float(np.dot(mic[a:b], mic[a:b])) for a, b in spans)
            e_out = sum(float(np.dot(y[a:b], y[a:b])) for a, b in spans)
            hp = shift(apm_hpf_only(mic, SR), lag["hpf_only_lag_samples"])
            c.update(level_change_db=db(e_out / e_in),
                     correlation=float(np.corrcoef(y, mic)[0, 1]),
                     correlation_hpf_only=float(np.corrcoef(y, hp)[0, 1]),
                     max_abs_diff_hpf_only=float(np.max(np.abs(y - hp))),
                     hpf_only_correlation=float(np.corrcoef(hp, mic)[0, 1]))
        res["conditions"].append(c)
        print(f"  {label}: WER mic {c['wer_mic']:.1f} out {c['wer_out']:.1f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return res


def cpu_section(far16: np.ndarray, passes: int) -> list[dict]:
    from livekit import rtc

    out = []
    for rate in (16000, 48000):
        far = far16 if rate == 16000 else resample_poly(far16, 3, 1).astype(np.float32)
        mic = make_echo(far, 0.4, 150.0, rate) + noise(len(far))
        f = rate // 100
        nf = len(mic) // f
        warm = 100
        m2 = np.ascontiguousarray(mic[:nf * f, None])
        r2 = np.ascontiguousarray(far[:nf * f, None])

        def to16(x):
            return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)

        m16, r16 = to16(mic[:nf * f]), to16(far[:nf * f])
        node_ms, apm_ms = [], []
        for _ in range(passes):
            node = EchoCancel("aec", EchoCancel.Params())
            spec = AudioSpec(rate, 1, f)
            o = node.negotiate({"audio": spec, "reference": spec})["audio"]
            node.prepare({"audio": o, "reference": spec})
            io = NodeIO("aec", {"audio": np.zeros((o.max_block, 1), np.float32)}, [])
            t = 0.0
            for k in range(nf):
                if k == warm:
                    t = time.process_time()
                io._in = {"audio": m2[k * f:(k + 1) * f], "reference": r2[k * f:(k + 1) * f]}
                io.start = {"audio": k * f, "reference": k * f}
                node.process(io)
                io._produced["audio"] = 0
            node_ms.append((time.process_time() - t) * 1000 / (nf - warm))
            node.close()
            apm = rtc.AudioProcessingModule(echo_cancellation=True, noise_suppression=False,
                                            high_pass_filter=True, auto_gain_control=False)
            mb = [bytearray(m16[k * f:(k + 1) * f].tobytes()) for k in range(nf)]
            rb = [bytearray(r16[k * f:(k + 1) * f].tobytes()) for k in range(nf)]
            for k in range(nf):
                if k == warm:
                    t = time.process_time()
                apm.process_reverse_stream(rtc.AudioFrame(rb[k], rate, 1, f))
                apm.process_stream(rtc.AudioFrame(mb[k], rate, 1, f))
            apm_ms.append((time.process_time() - t) * 1000 / (nf - warm))
        nm, am = float(np.median(node_ms)), float(np.median(apm_ms))
        out.append({"rate": rate, "frames_timed": nf - warm, "passes": passes,
                    "node_ms_per_frame": nm, "apm_ms_per_frame": am, "node_rtf": nm / 10,
                    "node_over_apm": nm / am, "node_ms_passes": node_ms,
                    "apm_ms_passes": apm_ms})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="2 rooms x 2 delays, 4 near-end utterances, one CPU pass")
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--dt-rt60", type=float, default=0.4, help="double-talk room RT60 s")
    ap.add_argument("--dt-delay", type=float, default=150.0, help="double-talk echo delay ms")
    ap.add_argument("--far-dbfs", type=float, default=-26.0,
                    help="far end's level at the reference input (RMS over its speech)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    rt60s = [0.0, 0.4] if a.quick else [0.0, 0.2, 0.4, 0.6]
    delays = [150.0, 400.0] if a.quick else [30.0, 150.0, 400.0]
    near_names = NEAR[:4] if a.quick else NEAR
    utt = dict(utterances())
    gap = np.zeros(int(0.2 * SR), np.float32)
    far16 = np.concatenate([p for name in FAR for p in (utt[name], gap)] + [np.zeros(SR)])
    far16 = (far16 * 10 ** ((a.far_dbfs + 26) / 20)).astype(np.float32)  # utterances(): -26
    named = {p.name: t for p, t in bc.rows()}
    near = [utt[n] for n in near_names]
    refs = [named[n] for n in near_names]
    print(f"far end {len(far16) / SR:.1f} s ({len(FAR)} recordings, 2 speakers) at "
          f"{a.far_dbfs:g} dBFS; echo "
          f"{ECHO_DBFS:g} dBFS RMS, mic noise {NOISE_DBFS:g} dBFS; near end {len(near)} "
          f"utterances, {sum(len(x) for x in near) / SR:.0f} s\n", flush=True)

    print("CPU ...", flush=True)
    cpu = cpu_section(far16, 1 if a.quick else 3)
    lag = [measure_lag(r) for r in (16000, 48000)]
    lags = {m["rate"]: m["lag_samples"] for m in lag}
    print("rooms ...", flush=True)
    rooms = rooms_section(far16, rt60s, delays, lags)
    from engine.models.manifest import models_dir
    from engine.models.whisper_onnx import WhisperOnnx

    model = WhisperOnnx(models_dir() / a.model)
    print("double talk ...", flush=True)
    dt = double_talk(far16, near, refs, model, a.dt_rt60, a.dt_delay, lag[0])

    print("\n## Echo reduction, far end only (synthetic echo path, real speech)\n")
    print(table(["rate", "room", "echo delay ms", "ERLE first 2 s dB", "ERLE after 2 s dB",
                 "time to 20 dB s (then 1 s of 0.25 s windows >= 20)",
                 "after 2 s: p10 of 0.25 s windows dB",
                 "noise-floor ceiling dB", "node stats echo_reduction_db"],
                [[f"{r['rate'] // 1000} kHz",
                  "pure delay" if r["rt60_s"] == 0 else f"RT60 {r['rt60_s']:g} s",
                  f"{r['delay_ms']:g}" + (f" (reference_delay_ms {r['reference_delay_ms']:g})"
                                          if r["reference_delay_ms"] else ""),
                  f1(r["erle_first_2s_db"]), f1(r["erle_after_2s_db"]),
                  "never" if r["time_to_20db_s"] is None else f"{r['time_to_20db_s']:.2f}",
                  f1(r["erle_windows_after_p10_db"]), f1(r["ceiling_db"]),
                  f1(r["node_echo_reduction_db"])] for r in rooms]))
    print(f"\n## Double talk: RT60 {dt['rt60_s']:g} s, echo delay {dt['delay_ms']:g} ms, "
          f"{dt['utterances']} near-end utterances ({dt['words']} words), "
          f"{100 * dt['near_speech_on_echo_fraction']:.0f}% of their speech over active echo; "
          f"ASR {a.model}, each utterance decoded whole (speech span +- {MARGIN_S:g} s)\n")
    print(table(["condition", "WER % near end alone", "WER % microphone", "WER % node output",
                 "near-end level change dB (LS gain vs APM high-pass only / vs input)",
                 "ERLE far-only before / after first "
                 "near utterance dB", "node stats echo_reduction_db"],
                [[c["condition"], f"{dt['wer_clean']:.1f}", f"{c['wer_mic']:.1f}",
                  f"{c['wer_out']:.1f}",
                  f"{f1(c['near_gain_db'], 2)} / {f1(c['near_gain_vs_input_db'], 2)}",
                  (f"{f1(c['erle_far_only_before_db'])} / {f1(c['erle_far_only_after_db'])}"
                   if "erle_far_only_before_db" in c else "-"),
                  f1(c["node_echo_reduction_db"])] for c in dt["conditions"]]))
    ctl = dt["conditions"][0]
    print("\n## Near end alone, no far end (pass-through)\n")
    print(table(["level change dB (energy, speech spans)", "correlation output / input",
                 "correlation APM high-pass only / input",
                 "correlation output / APM high-pass only", "max |output - high-pass only|"],
                [[f1(ctl["level_change_db"], 2), f"{ctl['correlation']:.4f}",
                  f"{ctl['hpf_only_correlation']:.4f}", f"{ctl['correlation_hpf_only']:.4f}",
                  f"{ctl['max_abs_diff_hpf_only']:.5f}"]]))
    print("\n## Output lag (measured: cross-correlation peak, noise in, reference silent)\n")
    print(table(["rate", "node lag samples", "lag ms", "gain at the peak",
                 "node.latency_samples (declared)", "APM high-pass only: lag samples"],
                [[f"{m['rate'] // 1000} kHz", str(m["lag_samples"]), f"{m['lag_ms']:.2f}",
                  f"{m['peak_gain']:.3f}", str(m["node_latency_samples"]),
                  str(m["hpf_only_lag_samples"])] for m in lag]))
    print("\n## CPU (process time, 10 ms frames, warm-up excluded)\n")
    print(table(["rate", "node ms / frame", "APM direct ms / frame", "node RTF",
                 "node / APM", "passes (median)"],
                [[f"{c['rate'] // 1000} kHz", f"{c['node_ms_per_frame']:.4f}",
                  f"{c['apm_ms_per_frame']:.4f}", f"{c['node_rtf']:.4f}",
                  f"{c['node_over_apm']:.2f}", str(c["passes"])] for c in cpu]))
    total = time.perf_counter() - t_start
    print(f"\nwhole run {total:.0f} s")
    if a.json:
        a.json.write_text(json.dumps({"config": {
            "quick": a.quick, "model": a.model, "echo_dbfs": ECHO_DBFS,
            "noise_dbfs": NOISE_DBFS, "far_dbfs": a.far_dbfs, "far": FAR, "near": near_names,
            "seed": SEED,
            "far_s": len(far16) / SR}, "output_lag": lag, "rooms": rooms, "double_talk": dt,
            "cpu": cpu, "run_s": total}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
