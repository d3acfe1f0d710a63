#!/usr/bin/env python3
"""Engine core costs: the audio callback, and the graph's own overhead per 10 ms quantum.

* callback: the shipped sounddevice input callback (ring copy + status + self-timing) called on
  480-frame blocks, against a bare ``np.copyto`` of the same block measured in the same run; and,
  when PulseAudio's null sink is up, the callback durations of a real 10 s capture stream.
* overhead: a graph of a file source and 8 ``dsp.gain`` nodes run as fast as possible; the engine
  measures each quantum's time minus the time spent inside nodes.

    python tools/bench/bench_engine.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.backends.sounddevice_backend import input_callback  # noqa: E402
from engine.backends.stream_stats import CallbackStats  # noqa: E402
from engine.graph import parse_graph  # noqa: E402
from engine.ring import AudioRing  # noqa: E402
from engine.runtime import Engine  # noqa: E402


def bench_callback(n: int = 20000) -> dict:
    """The shipped sounddevice capture callback, called directly on 480-frame blocks."""
    ring = AudioRing(48000 * 4, 1)
    callback = input_callback(ring, CallbackStats())
    block = np.random.default_rng(0).standard_normal((480, 1)).astype(np.float32)
    sink = np.zeros((480, 1), np.float32)

    class TI:
        inputBufferAdcTime = 0.0

    ti, status = TI(), 0

    out = np.zeros((480, 1), np.float32)
    t = []
    for _ in range(n):
        s = time.perf_counter()
        callback(block, 480, ti, status)
        t.append(time.perf_counter() - s)
        ring.read_into(out)
    ref = []
    for _ in range(n):
        s = time.perf_counter()
        np.copyto(sink, block)
        ref.append(time.perf_counter() - s)
    cb, rf = np.array(t) * 1e6, np.array(ref) * 1e6
    return {"callback_mean_us": float(cb.mean()), "callback_p99_us": float(np.percentile(cb, 99)),
            "copyto_mean_us": float(rf.mean()), "ratio_vs_copyto": float(cb.mean() / rf.mean()),
            "budget_us": 10000.0}


def bench_live_stream(seconds: float = 10.0) -> dict | None:
    if subprocess.run(["pactl", "info"], capture_output=True).returncode != 0:
        return None
    spec = parse_graph("""
[[nodes]]
id = "mic"
type = "source.microphone"
params = { sample_rate = 48000, block = 480 }
""")
    eng = Engine(spec)
    eng.run(duration=seconds)
    st = eng.stats()["nodes"]["mic"]
    return {"callbacks": st["callbacks"], "callback_mean_us": st["callback_mean_ms"] * 1e3,
            "callback_p99_us": st["callback_p99_ms"] * 1e3,
            "overflows": st["input_overflows"]}


def bench_overhead(n_nodes: int = 8, seconds: int = 300) -> dict:
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "noise.wav"
        sf.write(wav, np.random.default_rng(1).standard_normal((48000 * seconds, 1)) * 0.1,
                 48000, subtype="FLOAT")
        text = f'[[nodes]]\nid="src"\ntype="source.file"\nparams={{path="{wav}"}}\n'
        prev = "src"
        for i in range(n_nodes):
            text += f'[[nodes]]\nid="g{i}"\ntype="dsp.gain"\nin={{audio="{prev}.audio"}}\n'
            prev = f"g{i}"
        eng = Engine(parse_graph(text), realtime=False)
        st = eng.run()
    o = st["engine_overhead"]
    node_ms = sum(n["cpu_mean_ms"] for n in st["nodes"].values())
    return {"nodes": n_nodes + 1, "quanta": st["quanta"], "overhead_mean_ms": o["mean_ms"],
            "overhead_p99_ms": o["p99_ms"], "node_work_mean_ms": round(node_ms, 4),
            "speed_x_realtime": st["speed"], "target_ms": 0.2}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    a = ap.parse_args()
    res = {"callback": bench_callback(), "live_stream": bench_live_stream(),
           "overhead": bench_overhead()}
    c, o, live = res["callback"], res["overhead"], res["live_stream"]
    print("| measure | value | reference | ratio |")
    print("|---|---|---|---|")
    print(f"| callback body, 480 frames (mean) | {c['callback_mean_us']:.2f} us | np.copyto "
          f"{c['copyto_mean_us']:.2f} us | {c['ratio_vs_copyto']:.1f}x |")
    print(f"| callback body p99 | {c['callback_p99_us']:.2f} us | block period 10000 us | "
          f"{c['callback_p99_us'] / 10000:.5f} |")
    if live:
        print(f"| real PulseAudio stream, {live['callbacks']} callbacks: mean / p99 | "
              f"{live['callback_mean_us']:.1f} / {live['callback_p99_us']:.1f} us | "
              f"block period 10000 us | {live['callback_p99_us'] / 10000:.5f} |")
    print(f"| engine overhead per 10 ms quantum ({o['nodes']} nodes), mean / p99 | "
          f"{o['overhead_mean_ms']:.4f} / {o['overhead_p99_ms']:.4f} ms | target 0.2 ms | "
          f"{o['overhead_mean_ms'] / 0.2:.2f} |")
    print(f"| node work per quantum (same graph) | {o['node_work_mean_ms']:.4f} ms | | |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
