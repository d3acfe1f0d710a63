"""Benchmark the streaming resampler against ``scipy.signal.resample_poly``.

Run: ``python tools/bench/bench_resample.py [--seconds 30] [--repeat 5] [--json PATH]``.

Measures the real-time factor (seconds of audio processed per second of CPU time of the calling
thread, ``time.thread_time``; best of ``--repeat``) on mono white noise for 48 kHz -> 16 kHz and
44.1 kHz -> 16 kHz:

* ours, ``quality="high"`` and ``"fast"``, streamed in 10 ms blocks (the Python call overhead
  per block is included) and in one big block;
* ``scipy.signal.resample_poly`` on the whole signal in one call, with its default filter (Kaiser
  beta 5, 20 x max(up, down) taps: cheaper but only ~ -55 dB flat and -6 dB at the lower Nyquist)
  and with our ``high`` prototype passed as ``window`` (same filter, so same quality).

Everything runs on one thread; kernels are compiled and warmed before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
from scipy import signal  # noqa: E402

from engine.dsp.resample import StreamingResampler  # noqa: E402


def _best_cpu(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return max(best, 1e-9)


def _ours(rs: StreamingResampler, x: np.ndarray, block: int):
    out = np.zeros((rs.max_output(block), rs.channels), np.float32)
    tail = np.zeros((max(rs.max_flush, 1), rs.channels), np.float32)

    def run() -> None:
        rs.reset()
        for i in range(0, len(x), block):
            rs.process(x[i:i + block], out)
        rs.flush(tail)

    return run


def bench(seconds: float, repeat: int) -> list[dict]:
    rows: list[dict] = []
    for in_rate, out_rate in ((48000, 16000), (44100, 16000)):
        n = int(seconds * in_rate)
        x = np.random.default_rng(0).uniform(-0.9, 0.9, (n, 1)).astype(np.float32)
        x1 = x[:, 0].astype(np.float64)
        pair = f"{in_rate // 1000 if in_rate % 1000 == 0 else in_rate / 1000:g}k -> 16k"
        cases = []
        for quality in ("high", "fast"):
            rs = StreamingResampler(in_rate, out_rate, 1, quality)
            block10 = in_rate // 100
            cases.append((f"ours {quality}, 10 ms blocks", _ours(rs, x, block10), rs))
            cases.append((f"ours {quality}, one block", _ours(rs, x, n), rs))
        high = StreamingResampler(in_rate, out_rate, 1, "high")
        up, down = high.up, high.down
        taps = high.taps / up  # resample_poly multiplies by up itself
        cases.append(("scipy resample_poly, default filter",
                      partial(signal.resample_poly, x1, up, down), None))
        cases.append(("scipy resample_poly, our high filter",
                      partial(signal.resample_poly, x1, up, down, window=taps), None))
        results = []
        for name, fn, rs in cases:
            fn()  # warm (compile / load from cache, page in buffers)
            cpu = _best_cpu(fn, repeat)
            results.append({"pair": pair, "method": name, "audio_s": seconds, "cpu_s": cpu,
                            "rtf": seconds / cpu,
                            "taps_per_output": (rs.taps_per_phase if rs is not None else None)})
        base = next(r["rtf"] for r in results if r["method"].endswith("default filter"))
        for r in results:
            r["vs_scipy_default"] = r["rtf"] / base
        rows.extend(results)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="audio length per case")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per case (best is kept)")
    ap.add_argument("--json", type=Path, help="write the results to this JSON file")
    args = ap.parse_args(argv)
    rows = bench(args.seconds, args.repeat)
    print(f"{args.seconds:g} s of mono noise, CPU time of one thread, best of {args.repeat}\n")
    print("| conversion | method | taps/output | CPU s | x real time | vs scipy default |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        taps = r["taps_per_output"] if r["taps_per_output"] is not None else ""
        print(f"| {r['pair']} | {r['method']} | {taps} | {r['cpu_s']:.4f} | {r['rtf']:.0f} | "
              f"{r['vs_scipy_default']:.2f}x |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
