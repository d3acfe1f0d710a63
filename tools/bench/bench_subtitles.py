#!/usr/bin/env python3
"""Subtitle files over a day of captions: cost per caption as the files grow.

``sink.subtitles`` is fed one ``transcript.final`` at a time (six words, 3 s apart; every 7th
overlaps the one before, so the last cue's end moves) up to ``--cues`` finals, writing an SRT and
a WebVTT file into a temporary folder. At checkpoints it reports the time one caption takes
(median of the next 50) and the bytes written so far per byte of the files. Reference in the same
run: the whole-file rewrite ``sink.subtitles`` did before (render every cue, write beside, rename
over), timed at the same checkpoints on the same cues. About 450 cues make an hour of speech.

    python tools/bench/bench_subtitles.py [--cues 45100] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine.events import TranscriptFinal  # noqa: E402
from engine.node import NodeIO  # noqa: E402
from engine.nodes.subtitles import SubtitlesSink, to_srt, to_vtt  # noqa: E402

RATE = 16000
WORDS = "and so my fellow americans ask not what your country can do for you".split()


def final(i: int) -> TranscriptFinal:
    start = i * 3.0 - (0.4 if i % 7 == 3 else 0.0)
    text = " ".join(WORDS[i % 8: i % 8 + 6])
    return TranscriptFinal(int((i * 3.0 + 2.5) * RATE), RATE, "asr", text=text,
                           start_sample=int(start * RATE))


def rewrite_whole(folder: Path, cues) -> None:
    """The reference: what sink.subtitles did per caption before (both files in full)."""
    for name, text in (("ref.srt", to_srt(cues)), ("ref.vtt", to_vtt(cues))):
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(text.encode())
        os.replace(tmp, folder / name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cues", type=int, default=45100)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    checkpoints = [c for c in (100, 1000, 5000, 10000, 20000, 45000) if c + 50 < args.cues]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        node = SubtitlesSink("subs", SubtitlesSink.Params(srt=str(folder / "c.srt"),
                                                          vtt=str(folder / "c.vtt")))
        node.prepare({})
        times: list[float] = []
        for i in range(args.cues):
            io = NodeIO("subs", {}, [])
            io._events_in = {"events": [final(i)]}
            t0 = time.perf_counter()
            node.process(io)
            times.append(time.perf_counter() - t0)
            if checkpoints and i == checkpoints[0] + 50:
                c = checkpoints.pop(0)
                ours = statistics.median(times[c:c + 50]) * 1e3
                ref_t = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    rewrite_whole(folder, node.cues)
                    ref_t.append(time.perf_counter() - t0)
                ref = statistics.median(ref_t) * 1e3
                size = sum((folder / f).stat().st_size for f in ("c.srt", "c.vtt"))
                rows.append({"cues": c, "ms_per_caption": round(ours, 3),
                             "whole_rewrite_ms": round(ref, 3),
                             "speed_up": round(ref / ours, 1),
                             "bytes_written_per_file_byte": round(
                                 node.stats()["bytes_written"] / size, 2)})
        ok = (folder / "c.srt").read_text() == to_srt(node.cues)
    print(f"## sink.subtitles, one caption at a time ({args.cues} finals; files equal a full "
          f"rendering at the end: {ok})\n")
    print("| cues in the files | ms per caption (in place) | whole rewrite (reference) ms | "
          "ratio | bytes written / file bytes |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['cues']} | {r['ms_per_caption']:.3f} | {r['whole_rewrite_ms']:.3f} | "
              f"{r['speed_up']:.0f}x | {r['bytes_written_per_file_byte']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "files_valid": ok}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
