#!/usr/bin/env python3
"""A voice-assistant loop on the engine: listen, end of turn, "think", speak, barge-in, repeat.

    python examples/assistant.py                       # loudspeakers: talk over it to stop it
    python examples/assistant.py --headset             # no echo: the canceller bypassed
    python examples/assistant.py --half-duplex         # deaf while it speaks
    python examples/assistant.py --reply my_tts.wav --duration 60

It answers every turn with the same recorded reply (stand-in for a TTS that returns a NumPy
array). Ctrl-C stops it cleanly: the last turn is finalised, the models are released.

Echo: on loudspeakers the microphone hears the reply. graphs/assistant.toml takes it out with an
echo canceller (``dsp.echo_cancel``) before the VAD, so the reply is not taken for a user turn
and speaking while it plays stops it (``vad.speech_started`` -> ``Engine.stop_playback()``;
the words said before it stops are often lost). ``--headset``: no echo, the canceller is
bypassed (it would duck those words for nothing). ``--half-duplex``: the VAD is deaf from each
reply's start until 300 ms after its end (a loud, distorting speaker whose echo gets through).
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from pathlib import Path

import soundfile as sf

from engine.errors import EngineError
from engine.events import Event
from engine.runtime import Engine

REPO = Path(__file__).resolve().parent.parent

_SAY = threading.Lock()


def say(*parts: object) -> None:
    """print() for the callbacks' thread and the main thread at once: whole lines, never
    two interleaved."""
    with _SAY:
        print(*parts, flush=True)


GRAPH = REPO / "graphs" / "assistant.toml"
REPLY = REPO.parent / "shared" / "data" / "speech" / "ljspeech__LJ001-0002.wav"


def build(headset: bool, half_duplex: bool) -> Engine:
    eng = Engine.from_file(GRAPH)
    if headset:  # no echo to cancel (run-time controls: switch back when the headset goes)
        eng.set("aec", bypass=True)
    if half_duplex:  # deaf while replying
        eng.set("vad", follow_playback=True)
    return eng


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reply", default=str(REPLY), help="audio file played as every reply")
    ap.add_argument("--headset", action="store_true", help="no echo: bypass the canceller")
    ap.add_argument("--half-duplex", action="store_true", help="deaf while replying")
    ap.add_argument("--think-s", type=float, default=0.3, help="pretend thinking time")
    ap.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    a = ap.parse_args()
    reply, reply_rate = sf.read(a.reply, dtype="float32")  # what a TTS would return

    eng = build(a.headset, a.half_duplex)
    turns: queue.SimpleQueue[Event] = queue.SimpleQueue()
    spoke = [0]  # user speech onsets so far: a reply to an older turn is stale

    # callbacks run on the engine's dispatcher thread, one at a time: keep them short (a
    # slow one would delay every later event, the barge-in's vad.speech_started included)
    def on_final(ev: Event) -> None:  # the user's turn is over (ev.last: not a cut part)
        if ev.last and ev.text:
            turns.put(ev)

    def on_segment(ev: Event) -> None:  # the turn's audio, e.g. for a speaker check
        say(f"      turn audio: {ev.duration_s:.2f} s at {ev.sample_rate} Hz")

    def on_speech(ev: Event) -> None:  # barge-in (never during a reply in half duplex)
        spoke[0] += 1
        eng.stop_playback()

    eng.on("transcript.final", on_final)
    eng.on("speech.segment", on_segment)
    eng.on("vad.speech_started", on_speech)
    eng.on("playback.*", lambda ev: say(f"      {ev.type} at {ev.time_s:.2f} s"))
    say("listening (Ctrl-C to stop)")
    done = 0
    t_end = time.monotonic() + a.duration if a.duration else float("inf")
    with eng:  # leaving the block (Ctrl-C included) stops the engine and drains it
        try:
            while eng.running and time.monotonic() < t_end:
                try:
                    ev = turns.get(timeout=0.1)
                except queue.Empty:
                    continue
                ended = eng.wall_time_of(ev.speech_end_sample / ev.sample_rate)
                late = time.monotonic() - ended if ended else float("nan")
                say(f"user: {ev.text}   ({late:.2f} s after they stopped)")
                asked = spoke[0]
                time.sleep(a.think_s)  # ... an LLM, a TTS: on this thread, not in a callback
                if spoke[0] != asked:  # they spoke again meanwhile: answer that instead
                    say("      (reply dropped: the user went on)")
                    continue
                try:
                    eng.play(reply, rate=reply_rate)
                except EngineError as e:  # the engine ended while we were thinking
                    say(f"      (no reply: {e})")
                    break
                done += 1
        except KeyboardInterrupt:
            say("\nstopping")
    st = eng.stats()
    mic, spk = st["nodes"]["mic"], st["nodes"]["speaker"]
    say(f"{done} replies; final latency {st['latency'].get('transcript.final', {})}; "
          f"mic overflows {mic.get('input_overflows')}, speaker underflows "
          f"{spk.get('output_underflows')}, skipped {spk.get('skipped_frames')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
