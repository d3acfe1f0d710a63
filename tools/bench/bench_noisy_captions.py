#!/usr/bin/env python3
"""Live captions in a noisy room: WER, captions of the noise itself, and latency under noise.

1. The captions session of ``bench_captions.py`` (the utterances of ../shared/data/speech in
   order, ``--gap`` s between them, through ``graphs/live_captions.toml`` as fast as possible),
   each utterance normalised to -26 dBFS over its speech (``bench_vad.active_span``), with
   real environmental noise without voices under all of it (``bench_vad.noise_track``: 33
   recordings of ../shared/data/events and ../shared/data/vad, rain, train, typing, music,
   dishes..., 2-8 s pieces chained) at clean / 20 / 10 / 5 dB SNR. Per SNR: WER of the finals
   (each final attributed to the utterance it overlaps most, as in bench_captions.py);
   **stray finals**: finals that overlap no utterance (their audio is noise only), per hour of
   the session's noise-only time; the VAD's end of speech minus the true end (p50 / p90: how
   much later a noisy room ends a caption, on the audio clock); segments the recogniser
   rejected, by reason; and, as a reference, the WER of the same model decoding each
   recording's own stretch of the same mix whole (no VAD, no streaming).
2. Noise only: every non-voice recording played once, whole, one after the other (cross-faded),
   at ``--noise-dbfs`` levels (-36 dBFS = the 10 dB condition's noise level, -26 dBFS = as loud
   as the speaker): the finals and the partials shown, with the recording they came from. The
   four recordings with voices (laughter, a cappella singing, a crying baby, a cheering crowd)
   are run apart, for information.
3. Latency (``--realtime``): a third of the utterances replayed in real time, clean and at
   10 dB (the first seed's noise) in the same run: from each utterance's true end to its last
   final, and from its true start to its first partial (``bench_captions.run_session``).

``--compare NAME=VALUE`` runs every fast condition a second time with that asr.whisper
parameter (as ``bench_captions.py --asr``), so a guard's before / after comes from one run.
``--vad threshold=0.01`` makes the VAD let noise through: what the recogniser's own guards do
with it. Default run (one seed, no --realtime) about 1 minute on 2 cores; with --realtime and
--compare about 4.5 minutes.

    python tools/bench/bench_noisy_captions.py [--snr 20 10 5] [--seeds 0 1 2] [--realtime]
        [--details]
        [--asr NAME=VALUE ...] [--vad NAME=VALUE ...] [--compare NAME=VALUE] [--json PATH]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_captions as bc  # noqa: E402
from bench_vad import SR, active_span, noise_files, noise_track, read16, table, utterances  # noqa: E402

from engine.console import CONSOLE  # noqa: E402
from engine.metrics import normalize, wer  # noqa: E402

SPEECH_RMS = 0.05  # -26 dBFS over each utterance's speech (bench_vad.utterances)


def session(utts: list[np.ndarray], gap: float) -> tuple[np.ndarray, list[tuple[float, float]],
                                                        list[tuple[int, int]]]:
    """The utterances in order, ``gap`` s of digital silence before, between and after them:
    (audio, each one's true speech span in seconds, each recording's extent in samples)."""
    pieces, spans, extents = [np.zeros(int(SR * gap), np.float32)], [], []
    pos = int(SR * gap)
    for x in utts:
        a, b = active_span(x)
        spans.append(((pos + a) / SR, (pos + b) / SR))
        extents.append((pos, pos + len(x)))
        pieces += [x, np.zeros(int(SR * gap), np.float32)]
        pos += len(x) + int(SR * gap)
    return np.concatenate(pieces), spans, extents


def noise_only(paths: list[Path], fade_s: float = 0.02) -> tuple[np.ndarray, list]:
    """Each recording whole (unit RMS), one after the other with cross-fades: (track,
    [(name, start s, end s)])."""
    fade = int(fade_s * SR)
    ramp = np.linspace(0, 1, fade, dtype=np.float32)
    out, where, pos = [], [], 0
    for p in paths:
        x = read16(p)
        x = (x / (np.sqrt(np.mean(x ** 2)) + 1e-9)).astype(np.float32)
        x[:fade] *= ramp
        x[-fade:] *= ramp[::-1]
        out.append(x)
        where.append((p.name, pos / SR, (pos + len(x)) / SR))
        pos += len(x)
    return np.concatenate(out), where


def quiet_run(audio: np.ndarray, spans, realtime: bool = False) -> dict:
    """``bench_captions.run_session`` with the terminal captions swallowed."""
    stream, CONSOLE.stream = CONSOLE.stream, io.StringIO()
    try:
        t0 = time.perf_counter()
        r = bc.run_session("whisper-tiny.en", audio, spans, realtime=realtime)
    finally:
        CONSOLE.stream = stream
    r["run_s"] = time.perf_counter() - t0
    return r


def source_of(t0: float, t1: float, where) -> str:
    ov = [(max(0.0, min(t1, b) - max(t0, a)), n) for n, a, b in where]
    return max(ov)[1] if ov else "?"


def whole_utterance_wer(model, x: np.ndarray, extents, refs) -> float:
    """WER of the same model decoding each recording's own extent of the mix whole (no VAD,
    no streaming): what the noise costs the model itself."""
    return wer(refs, [model.transcribe(x[a:b], language=None).text for a, b in extents])


def noisy_conditions(utts, refs, gap: float, snrs: list[float], seed: int,
                     model=None) -> list[dict]:
    speech, spans, extents = session(utts, gap)
    noise = noise_track(np.random.default_rng(seed), noise_files()[0], len(speech))
    noise_s = len(speech) / SR - sum(b - a for a, b in spans)
    out = []
    for snr in [None, *snrs]:
        x = speech if snr is None else \
            (speech + SPEECH_RMS / 10 ** (snr / 20) * noise).astype(np.float32)
        r = quiet_run(x, spans)
        stray = [f for f in r["finals"] if f[3] < 0]
        ends = []
        for i, (_, b) in enumerate(spans):
            mine = [f for f in r["finals"] if f[3] == i]
            if mine:
                ends.append(max(f[1] for f in mine) - b)
        reasons: dict[str, int] = {}
        for k in r["skipped"]:
            reasons[k[2]] = reasons.get(k[2], 0) + 1
        out.append({"snr": "clean" if snr is None else f"{snr:g} dB", "run": r,
                    "wer": wer(refs, r["texts"]),
                    "wer_whole": whole_utterance_wer(model, x, extents, refs) if model else None,
                    "stray": stray, "noise_s": noise_s,
                    "stray_per_h": len(stray) / noise_s * 3600,
                    "missing": sum(not t for t in r["texts"]),
                    "end_p50": float(np.percentile(ends, 50)) if ends else None,
                    "end_p90": float(np.percentile(ends, 90)) if ends else None,
                    "reasons": reasons})
    return out


def noise_only_runs(levels: list[float]) -> list[dict]:
    clean, voiced = noise_files()
    out = []
    for label, paths, lv in [*(("non-voice", clean, v) for v in levels),
                             ("with voices", voiced, levels[0])]:
        track, where = noise_only(paths)
        r = quiet_run((10 ** (lv / 20) * track).astype(np.float32), [])
        sec = len(track) / SR
        shown = [p for p in r["partial_texts"] if p[2]]
        out.append({"label": label, "dbfs": lv, "seconds": sec, "run": r,
                    "finals": [(*f[:3], source_of(f[0], f[1], where), *f[4:])
                               for f in r["finals"]],
                    "skipped": [(*k[:4], source_of(k[0], k[1], where)) for k in r["skipped"]],
                    "partials": len(shown),
                    "partial_segments": len({p[0] for p in shown}),
                    "finals_per_h": len(r["finals"]) / sec * 3600})
    return out


def summary(cs: list[dict]) -> list[str]:
    """One SNR over the seeds: WER mean (range), strays pooled."""
    w = [c["wer"] for c in cs]
    whole = [c["wer_whole"] for c in cs if c["wer_whole"] is not None]
    n = sum(len(c["stray"]) for c in cs)
    t = sum(c["noise_s"] for c in cs)
    return [cs[0]["snr"], f"{np.mean(w):.2f} ({min(w):.2f}-{max(w):.2f})",
            f"{np.mean(whole):.2f} ({min(whole):.2f}-{max(whole):.2f})" if whole else "-",
            f"{n} / {t:.0f} s", f"{n / t * 3600:.0f}",
            f"{np.mean([c['end_p90'] for c in cs]):.2f}"]


def parse_kv(kv: str) -> tuple[str, bool | float | str]:
    k, _, v = kv.partition("=")
    if v.lower() in ("true", "false"):
        return k, v.lower() == "true"
    try:
        return k, float(v)
    except ValueError:
        return k, v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snr", type=float, nargs="*", default=[20, 10, 5])
    ap.add_argument("--gap", type=float, default=1.5, help="silence (noise) between utterances")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0],
                    help="noise draws (which noise lies under which sentence); one row each "
                         "and a summary over all")
    ap.add_argument("--noise-dbfs", type=float, nargs="*", default=[-36, -26])
    ap.add_argument("--realtime", action="store_true", help="latency, clean and 10 dB")
    ap.add_argument("--details", action="store_true", help="print every stray/skipped text")
    ap.add_argument("--asr", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--vad", action="append", default=[], metavar="NAME=VALUE",
                    help="change a vad.silero parameter, e.g. threshold=0.01: a VAD that lets "
                         "noise through, to see what the recogniser does with it")
    ap.add_argument("--compare", metavar="NAME=VALUE",
                    help="run the fast conditions again with this asr.whisper parameter")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    base = dict(parse_kv(kv) for kv in a.asr)
    bc.VAD_PARAMS.update(parse_kv(kv) for kv in a.vad)
    variants = [("as configured", base)]
    if a.compare:
        variants.append((a.compare, {**base, **dict([parse_kv(a.compare)])}))
    named = dict(bc.rows())
    utt = utterances()
    refs = [named[bc.SPEECH / n] for n, _ in utt]
    utts = [x for _, x in utt]
    res: dict = {"variants": {}}
    from engine.models.manifest import models_dir
    from engine.models.whisper_onnx import WhisperOnnx

    model = WhisperOnnx(models_dir() / "whisper-tiny.en")
    print(f"session: {len(utts)} utterances, -26 dBFS, {a.gap:g} s gaps; noise seeds "
          f"{a.seeds}{'; vad ' + str(bc.VAD_PARAMS) if bc.VAD_PARAMS else ''}\n")
    for vname, params in variants:
        bc.ASR_PARAMS.clear()
        bc.ASR_PARAMS.update(params)
        conds = []
        for seed in a.seeds:
            for c in noisy_conditions(utts, refs, a.gap, a.snr, seed,
                                      model if vname == variants[0][0] else None):
                conds.append({**c, "seed": seed})
        noisy = noise_only_runs(a.noise_dbfs)
        res["variants"][vname] = {"conditions": conds, "noise_only": noisy}
        print(f"## asr: {vname} {params or ''}\n")
        print(table(["seed", "SNR", "WER %", "WER % whole utterances, no VAD", "finals",
                     "utterances without a final",
                     "stray finals (noise only)", "per hour of noise",
                     "VAD end - true end p50 / p90 s", "rejected segments",
                     "ASR RTF", "run s"],
                    [[c["seed"], c["snr"], f"{c['wer']:.2f}",
                      "-" if c["wer_whole"] is None else f"{c['wer_whole']:.2f}",
                      len(c["run"]["finals"]), c["missing"],
                      len(c["stray"]), f"{c['stray_per_h']:.0f}",
                      f"{c['end_p50']:.2f} / {c['end_p90']:.2f}",
                      ", ".join(f"{k} {v}" for k, v in sorted(c["reasons"].items())) or "0",
                      f"{c['run']['asr_rtf']:.3f}", f"{c['run']['run_s']:.0f}"]
                     for c in conds]))
        print(f"\n(noise-only time in the session: {conds[0]['noise_s']:.0f} s per SNR and "
              "seed)\n")
        if len(a.seeds) > 1:
            print(table(["SNR", f"WER % mean (range), {len(a.seeds)} seeds",
                         "whole utterances, no VAD", "stray finals / noise-only time",
                         "per hour", "VAD end - true end p90 s, mean"],
                        [summary([c for c in conds if c["snr"] == snr])
                         for snr in dict.fromkeys(c["snr"] for c in conds)]))
            print()
        for c in conds:
            for f in c["stray"]:
                print(f"  stray @ seed {c['seed']}, {c['snr']}: {f[0]:.1f}-{f[1]:.1f} s {f[2]!r} "
                      f"(logprob {f[4]:.2f}, no-speech {f[5]:.2f})")
        print()
        print(table(["noise only", "level dBFS", "seconds", "finals", "per hour",
                     "partials shown (segments)", "rejected segments"],
                    [[n["label"], f"{n['dbfs']:g}", f"{n['seconds']:.0f}", len(n["finals"]),
                      f"{n['finals_per_h']:.0f}", f"{n['partials']} ({n['partial_segments']})",
                      len(n["skipped"])] for n in noisy]))
        print()
        for n in noisy:
            for f in n["finals"]:
                print(f"  final, {n['label']} @ {n['dbfs']:g} dBFS: {f[0]:.1f}-{f[1]:.1f} s "
                      f"{f[2]!r} ({f[3]}; logprob {f[4]:.2f}, no-speech {f[5]:.2f})")
            if a.details:
                for k in n["skipped"]:
                    print(f"  rejected ({k[2]}), {n['label']} @ {n['dbfs']:g}: {k[3]!r} ({k[4]})")
        if a.details:
            for c in conds:
                for k in c["run"]["skipped"]:
                    print(f"  rejected @ seed {c['seed']}, {c['snr']} ({k[2]}, utterance "
                          f"{k[4]}): {k[3]!r}")
                bad = sorted(range(len(refs)), key=lambda i: -len(set(normalize(refs[i]).split())
                                                                  ^ set(normalize(
                                                                      c["run"]["texts"][i])
                                                                      .split())))[:4]
                for i in bad:
                    print(f"  {c['snr']} #{i}: ref {refs[i]!r}\n      hyp {c['run']['texts'][i]!r}")
        print()
    if a.realtime:
        bc.ASR_PARAMS.clear()
        bc.ASR_PARAMS.update(base)
        sub = list(range(0, len(utts), 3))
        speech, spans, _ = session([utts[i] for i in sub], a.gap)
        noise = noise_track(np.random.default_rng(a.seeds[0]), noise_files()[0], len(speech))
        rows = []
        for snr in (None, 10.0):
            x = speech if snr is None else \
                (speech + SPEECH_RMS / 10 ** (snr / 20) * noise).astype(np.float32)
            r = quiet_run(x, spans, realtime=True)
            res.setdefault("realtime", {})["clean" if snr is None else f"{snr:g} dB"] = r
            rows.append(["clean" if snr is None else f"{snr:g} dB",
                         f"{wer([refs[i] for i in sub], r['texts']):.2f}",
                         f"{r['final_latency_p50_s']:.2f} / {r['final_latency_p90_s']:.2f}",
                         f"{r['first_partial_latency_p50_s']:.2f} / "
                         f"{r['first_partial_latency_p90_s']:.2f}",
                         f"{r['with_final']}/{r['utterances']}", f"{r['asr_rtf']:.3f}"])
        print(f"## Real time, {len(sub)} utterances (every third), {len(speech) / SR:.0f} s "
              "per condition\n")
        print(table(["SNR", "WER %", "final after true end p50 / p90 s",
                     "first partial after true start p50 / p90 s", "with a final",
                     "ASR RTF"], rows))
    print(f"\nwhole run {time.perf_counter() - t_start:.0f} s")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
