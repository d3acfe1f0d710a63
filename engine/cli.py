"""The ``audio-engine`` command.

::

    audio-engine run GRAPH [--input FILE [--fast]] [--device D] [--output-device D]
                           [--backend sounddevice|pyaudio] [--duration S] [--stats-json FILE]
                           [--set NODE.PARAM=VALUE] [--loop] [--no-fallback] [--quiet]
                           [--serve [HOST:]PORT [--token T] [--ingest]]
    audio-engine validate GRAPH...
    audio-engine devices [--backend B]
    audio-engine models list | fetch [NAME...] | convert-whisper CT2_DIR OUT_DIR [--quantize int8]

User mistakes (bad graph, missing model, unreadable file, unknown device) print one paragraph
that names the problem and the fix, and exit with status 2. Ctrl-C drains every node (so the last
caption is finalised) and prints a summary.

Exit status of ``run``: 0 when the graph ran to its end (or was stopped with Ctrl-C) without a node
error; 3 when it ran to its end but a node raised on the way (the graph goes on past a failing
block, so its outputs may miss that audio: a batch job should not take them as complete); 2 for a
user mistake; 130 when a second Ctrl-C aborted the drain; 1 for anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .errors import DeviceError, EngineError
from .pcm import MAX_CHANNELS, MAX_RATE, MIN_RATE, RAW_FORMATS, SF_SUBTYPES, PcmFormat

SAMPLE = Path(__file__).parent / "data" / "samples" / "jfk.flac"
RAW_DEFAULTS = {"raw_rate": 16000, "raw_channels": 1, "raw_format": "s16le"}
NODE_ERRORS_EXIT = 3  # `run` reached the end, but a node raised on the way


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "cmd", None):
        parser.print_help()
        return 2
    _log_to_stderr()
    try:
        return int(args.func(args) or 0)
    except EngineError as e:
        from .console import CONSOLE

        CONSOLE.close()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `audio-engine nodes | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


class _ToStderr(logging.Handler):
    """``warning: message`` on the current ``sys.stderr``, like the command's own ``error:``
    lines."""

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        print(text, file=sys.stderr, flush=True)


def _log_to_stderr() -> None:
    """The engine's warnings (logger ``engine``: unused graph branches, callback errors) go to
    stderr with a level prefix; added once, so that in-process callers do not get doubles."""
    log = logging.getLogger("engine")
    if not any(isinstance(h, _ToStderr) for h in log.handlers):
        log.addHandler(_ToStderr(logging.WARNING))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audio-engine",
                                description="Real-time streaming audio engine")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    r = sub.add_parser("run", help="run a graph file")
    r.add_argument("graph", help="graph file (TOML), e.g. graphs/live_captions.toml")
    r.add_argument("--input", metavar="FILE",
                   help="stream FILE instead of the microphone (WAV, FLAC, OGG, MP3, ...; "
                        ".raw = headerless PCM, see --raw-*); '-' = standard input (WAV or "
                        "raw PCM from a pipe: arecord, ffmpeg -f wav -, sox)")
    r.add_argument("--raw-rate", type=int, metavar="HZ",
                   help="headerless PCM (.raw file or a pipe): sample rate (default 16000)")
    r.add_argument("--raw-channels", type=int, metavar="N",
                   help="headerless PCM: channels, interleaved (default 1)")
    r.add_argument("--raw-format", choices=tuple(RAW_FORMATS),
                   help="headerless PCM: sample format (default s16le)")
    r.add_argument("--fast", action="store_true",
                   help="with --input: run as fast as possible instead of in real time")
    r.add_argument("--loop", action="store_true", help="with --input: loop the file")
    r.add_argument("--device", help="input device name (substring) or index")
    r.add_argument("--output-device", help="output device name (substring) or index")
    r.add_argument("--backend", choices=("sounddevice", "pyaudio"), help="audio backend")
    r.add_argument("--duration", type=_positive_seconds, metavar="S",
                   help="stop after S seconds of audio (the graph's clock: with --fast as much "
                        "audio as in real time), draining every node")
    r.add_argument("--stats-json", metavar="FILE",
                   help="write the run's statistics (JSON) to FILE at the end")
    r.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   help="override a node parameter (value in TOML syntax)")
    r.add_argument("--no-fallback", action="store_true",
                   help="fail instead of streaming the bundled sample when no input exists")
    r.add_argument("--quiet", action="store_true",
                   help="no live status line, start-up notes or summary at the end (events "
                        "still print)")
    r.add_argument("--serve", nargs="?", const="127.0.0.1:8765", metavar="[HOST:]PORT",
                   help="serve the live web page and WebSocket API (default 127.0.0.1:8765)")
    r.add_argument("--token", help="with --serve: token required on every request "
                   "(?token= or Authorization: Bearer); needed to bind beyond loopback")
    r.add_argument("--ingest", action="store_true",
                   help="with --serve: audio comes from /ingest (browser mic, remote client)")
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="check graph files without running them")
    v.add_argument("graphs", nargs="+")
    v.set_defaults(func=cmd_validate)
    nd = sub.add_parser("nodes", help="list node types, or one type's ports and parameters")
    nd.add_argument("type", nargs="?", help="a node type (e.g. vad.silero) for its details")
    nd.set_defaults(func=cmd_nodes)
    for q in (r, v, nd):
        q.add_argument("--plugin", action="append", default=[], metavar="MODULE|FILE.py",
                       help="import your own node types first (a module name or a .py file "
                            "whose @register classes graph files can then use); repeatable")

    d = sub.add_parser("devices", help="list audio devices and their default rates")
    d.add_argument("--backend", default="sounddevice", choices=("sounddevice", "pyaudio"))
    d.set_defaults(func=cmd_devices)

    m = sub.add_parser("models", help="list, fetch and convert models")
    msub = m.add_subparsers(dest="mcmd")
    ml = msub.add_parser("list", help="models in the manifest and whether they are present")
    ml.set_defaults(func=cmd_models_list)
    mf = msub.add_parser("fetch", help="download, verify and install models")
    mf.add_argument("names", nargs="*", help="models to fetch (default: all required ones)")
    mf.add_argument("--all", action="store_true", help="include optional models")
    mf.add_argument("--force", action="store_true", help="fetch again even if present")
    mf.set_defaults(func=cmd_models_fetch)
    mc = msub.add_parser("convert-whisper",
                         help="convert a faster-whisper (CTranslate2) model folder to ONNX")
    mc.add_argument("ct2_dir")
    mc.add_argument("out_dir")
    mc.add_argument("--quantize", choices=("int8",), default=None)
    mc.set_defaults(func=cmd_models_convert)
    m.set_defaults(func=lambda a: (m.print_help(), 2)[1])
    return p


# ---------------------------------------------------------------------------------------------


def _positive_seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text}")
    return v


def _check_writable(path: str, what: str) -> Path:
    """Fail before the run, not after it, when ``path`` cannot be written."""
    from .node import unwritable

    why = unwritable(path)
    if why:
        raise EngineError(f"{what} {path}: cannot write there ({why})")
    return Path(path)


def _overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover
        import tomli as tomllib  # type: ignore[no-redef]
    out: dict[str, dict[str, Any]] = {}
    for it in items:
        key, sep, val = it.partition("=")
        node, dot, name = key.partition(".")
        if not sep or not dot or not node or not name:
            raise EngineError(f"--set {it!r}: expected NODE.PARAM=VALUE, e.g. asr.step_ms=300")
        try:
            v = tomllib.loads(f"v = {val}")["v"]
        except tomllib.TOMLDecodeError:
            v = val  # a bare word is a string
        out.setdefault(node, {})[name] = v
    return out


def _has_input_device(backend: str) -> tuple[bool, str]:
    from .backends import list_devices

    try:
        devs = list_devices(backend)
    except DeviceError as e:
        return False, str(e)
    if any(d.max_input_channels > 0 for d in devs):
        return True, ""
    return False, "no audio input device found"


def cmd_run(args: argparse.Namespace) -> int:
    from .console import CONSOLE
    from .graph import load_graph
    from .runtime import Engine

    _load_plugins(args.plugin)
    spec = load_graph(args.graph, _overrides(args.set), origin="--set")
    stats_path = _check_writable(args.stats_json, "--stats-json") if args.stats_json else None
    realtime = not args.fast
    inp, pipe = _choose_input(args, spec)
    if any(getattr(n.params, "path", None) == "-" for n in spec.nodes if n.type == "sink.events"):
        CONSOLE.stream = sys.stderr  # standard output carries the JSON Lines (| jq): keep it so
    if args.fast:
        spec = _without_speakers(spec)
    eng = Engine(spec, input=inp, realtime=realtime, device=args.device,
                 output_device=args.output_device, backend=args.backend, loop=args.loop,
                 max_seconds=args.duration,
                 # a remote microphone: when its client pauses or leaves, time goes on in silence
                 feed_idle_s=0.5 if args.ingest else 0.0,
                 raw={"raw_sample_rate": args.raw_rate, "raw_channels": args.raw_channels,
                      "raw_subtype": SF_SUBTYPES[args.raw_format]})
    if not args.quiet:
        _announce_monitors(eng.spec)
    eng.on("engine.xrun", _device_notice)
    eng.on("engine.node_error", _node_error_notice)
    server = _start_server(args, eng) if args.serve else None
    view = None
    if not args.quiet and CONSOLE.tty:
        CONSOLE.status_enabled = True
        view = _LiveView(eng)
    interrupted: list[str] = []

    def on_signal(signum, frame):  # the first Ctrl-C or SIGTERM drains, a second one aborts
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append("Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)

    # SIGTERM is how systemd, docker stop and timeout(1) end a program: drain as for Ctrl-C
    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    aborted = False
    reader = None
    try:
        eng.start()
        if pipe:
            from .pipe_input import FdStream, PipeReader

            reader = PipeReader(eng, FdStream(sys.stdin.fileno()), PcmFormat(
                args.raw_rate, args.raw_channels, args.raw_format), realtime=realtime).start()
        if view:
            view.start()
        while not eng.wait(0.1):
            if interrupted:
                CONSOLE.line(f"stopping ({interrupted[0]}): draining every node "
                             f"({interrupted[0]} again to abort)")
                break
        eng.stop(drain=True)
    except KeyboardInterrupt:  # the second Ctrl-C: leave without waiting for the last results
        aborted = True
        CONSOLE.live("")
        CONSOLE.line("aborted: results still being worked on are dropped")
        eng.stop(drain=False, timeout=10.0)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if view:
            view.stop()
        if server is not None:
            server.stop()
        CONSOLE.close()
    stats = eng.stats()
    if stats_path is not None:
        try:
            stats_path.write_text(json.dumps(stats, indent=2, default=str))
        except OSError as e:
            raise EngineError(f"--stats-json {stats_path}: cannot write there "
                              f"({e.strerror or e})") from None
    # a pipe that brought no audio at all: the error alone says it (no summary of nothing)
    nothing = reader is not None and reader.error is not None and not stats["audio_seconds"]
    if not args.quiet and not nothing:
        print(_summary(stats), file=sys.stderr)
    if eng.error is not None:
        raise eng.error
    if reader is not None and reader.error is not None:
        raise reader.error  # after the summary: what came before the problem was processed
    if aborted:
        return 130
    failed = {nid: n["errors"] for nid, n in stats["nodes"].items() if n.get("errors")}
    if failed:
        print("finished with node errors (" + ", ".join(f"{nid}: {k}" for nid, k in
                                                       failed.items())
              + "): outputs may be incomplete (the errors are above); exit status 3",
              file=sys.stderr)
        return NODE_ERRORS_EXIT
    return 0


def _choose_input(args: argparse.Namespace, spec: Any) -> tuple[str | None, bool]:
    """What stands in for the graph's microphone: ``--input FILE``, ``"feed"`` (``--ingest``,
    ``--input -``: then the second value is True for the pipe), the bundled sample when there
    is no input device, or None (the microphone). Refuses flag combinations that cannot work."""
    has_mic = any(n.type == "source.microphone" for n in spec.nodes)
    inp = args.input
    if (inp or args.ingest) and not has_mic:
        flag = "--input" if inp else "--ingest"
        raise EngineError(f"{flag} replaces the graph's source.microphone, and {args.graph} "
                          "has none (its sources are fixed in the file)")
    if args.token and not args.serve:
        raise EngineError("--token needs --serve: it guards the web server's requests")
    if args.ingest:
        if not args.serve:
            raise EngineError("--ingest needs --serve: the audio comes from its /ingest socket")
        if inp:
            raise EngineError("--ingest and --input are exclusive: pick one source")
        inp = "feed"
    if args.fast and not inp and has_mic:
        raise EngineError("--fast needs --input FILE: a microphone runs in real time")
    if args.loop and (not inp or args.ingest):
        raise EngineError("--loop needs --input FILE: it plays the file again at its end")
    if args.output_device is not None and not any(n.type == "sink.speaker" for n in spec.nodes):
        raise EngineError(f"--output-device: {args.graph} plays nothing (it has no "
                          "sink.speaker node)")
    _check_raw_flags(args, inp)
    pipe = inp == "-"
    if pipe:
        if args.loop:
            raise EngineError("--loop needs a file: a pipe cannot be read twice")
        if sys.stdin is None or sys.stdin.isatty():
            raise EngineError("--input -: standard input is a terminal; pipe audio into it, "
                              "e.g. arecord -f S16_LE -r 16000 | audio-engine run GRAPH "
                              "--input -")
        inp = "feed"
    if has_mic and not inp and not args.no_fallback and args.device is None:
        ok, why = _has_input_device(args.backend or spec.settings.backend)
        if not ok:
            print(f"{why}: streaming the bundled speech sample {SAMPLE.name} in real time "
                  "instead (use --input FILE for another file)", file=sys.stderr, flush=True)
            inp = str(SAMPLE)
    return inp, pipe


def _check_raw_flags(args: argparse.Namespace, inp: str | None) -> None:
    """--raw-* describe headerless PCM only; fill in their defaults and check their range."""
    from .audio_io import RAW_EXTENSIONS

    given = [k for k in RAW_DEFAULTS if getattr(args, k) is not None]
    if given and (not inp or inp != "-" and Path(inp).suffix.lower() not in RAW_EXTENSIONS):
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        why = ("there is no --input" if not inp else "/ingest clients send their format"
               if inp == "feed" else f"{inp} has a header that says its format")
        raise EngineError(f"{flags}: for headerless PCM only (--input FILE.raw or --input -); "
                          + why)
    for k, v in RAW_DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if not MIN_RATE <= args.raw_rate <= MAX_RATE or not 1 <= args.raw_channels <= MAX_CHANNELS:
        raise EngineError(f"--raw-rate must be {MIN_RATE}..{MAX_RATE} Hz and --raw-channels "
                          f"1..{MAX_CHANNELS}, got "
                          f"{args.raw_rate} Hz, {args.raw_channels} channels")


def _without_speakers(spec: Any) -> Any:
    """--fast: a sound device plays in real time, so speakers nobody listens to are left out
    (the graph's files are still written, as fast as the machine goes)."""
    from dataclasses import replace

    takers = spec.takers()
    drop = [n.id for n in spec.nodes if n.type == "sink.speaker" and not takers[n.id]]
    if not drop:
        return spec
    print(f"--fast: not playing to {', '.join(drop)} (sink.speaker runs in real time)",
          file=sys.stderr, flush=True)
    return replace(spec, nodes=tuple(n for n in spec.nodes if n.id not in drop))


def _announce_monitors(spec: Any) -> None:
    """Say which sound groups each monitor listens for (groups replace the defaults when set;
    extra_groups add to them): a monitor that silently lost its alarm group is dangerous."""
    from .nodes.sound_events import all_groups

    for n in spec.nodes:
        if n.type == "sound.yamnet":
            print(f"{n.id}: listening for {', '.join(all_groups(n.params))}", file=sys.stderr,
                  flush=True)


def _node_error_notice(ev: Any) -> None:
    """A node raised (the graph goes on): say so, as the runtime reports it (the first three
    errors of a node, then every 100th)."""
    from .console import CONSOLE

    CONSOLE.line(f"{ev.node}: error at {ev.time_s:.2f} s: {ev.message}")


def _load_plugins(specs: list[str]) -> None:
    from .node import load_plugin

    for s in specs:
        load_plugin(s)


def _device_notice(ev: Any) -> None:
    """Tell the user when an audio device goes silent (unplugged, suspended) and comes back."""
    from .console import CONSOLE

    if ev.kind == "stall":
        CONSOLE.line(f"{ev.node}: the audio device stopped at {ev.time_s:.1f} s (unplugged or "
                     "suspended?): the graph goes on, reopening the device in the background")
    elif ev.kind == "recovered":
        CONSOLE.line(f"{ev.node}: the audio device is back at {ev.time_s:.1f} s "
                     f"({ev.count / ev.sample_rate:.1f} s of audio lost)")
    elif ev.kind == "input_dropped":
        CONSOLE.line(f"{ev.node}: the graph fell behind real time at {ev.time_s:.1f} s: "
                     f"{ev.count / ev.sample_rate:.1f} s of input dropped so far (a node too "
                     "slow for real time? see the cpu figures)")
    elif ev.kind == "input_overflow":
        CONSOLE.line(f"{ev.node}: the input overflowed at {ev.time_s:.1f} s ({ev.count}x so "
                     "far): the audio callback ran late (machine busy?)")
    elif ev.kind in ("output_underflow", "output_dropped"):
        what = ("played silence: audio came too late" if ev.kind == "output_underflow"
                else f"dropped audio it could not play ({ev.count / ev.sample_rate:.1f} s so far)")
        CONSOLE.line(f"{ev.node}: the output {what} at {ev.time_s:.1f} s (machine busy?)")


def _start_server(args: argparse.Namespace, eng: Any) -> Any:
    """Start the web server for ``--serve`` (before the engine, so no event is missed)."""
    from .web.server import WebServer, is_loopback, parse_hostport

    try:
        host, port = parse_hostport(args.serve)
        server = WebServer(eng, host, port, token=args.token)
    except ValueError as e:
        raise EngineError(f"--serve: {e}") from None
    if not is_loopback(host):
        print(f"warning: serving on {host}:{port}, reachable from other machines; every "
              "request must carry the token", file=sys.stderr, flush=True)
    try:
        server.start()
    except OSError as e:
        raise EngineError(f"--serve {host}:{port}: {e.strerror or e}") from None
    q = f"?token={args.token}" if args.token else ""
    print(f"live view: {server.url}{q}  (captions overlay: {server.url}captions{q})",
          file=sys.stderr, flush=True)
    return server


class _LiveView:
    """Redraws the status line: input level, per-node load, xruns, latest event."""

    def __init__(self, eng):
        self.eng = eng
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, name="live-view", daemon=True)

    def start(self) -> None:
        self._t.start()

    def stop(self) -> None:
        self._stop.set()
        self._t.join(1.0)

    def _loop(self) -> None:
        from .console import CONSOLE

        while not self._stop.wait(0.25):
            CONSOLE.status(self.line())

    def line(self) -> str:
        eng = self.eng
        lvl = eng.input_level
        db = 20 * math.log10(lvl) if lvl > 1e-9 else -120.0
        bars = max(0, min(10, int((db + 60) / 6)))
        meter = "#" * bars + "." * (10 - bars)
        loads = []
        xruns = 0
        lost = []
        dropped = 0.0  # seconds of input a source's ring lost: the graph is behind real time
        elapsed = max(time.monotonic() - eng._t_start, 1e-3) if eng._t_start else 1e-3
        for st in eng._states:
            busy = st.timing.total / elapsed  # share of one core since the start
            drops = st.queue.drops if st.queue is not None else 0
            if busy > 0.005 or drops:
                loads.append((busy, f"{st.id} {100 * busy:.0f}%"
                              + (f" drop {drops}" if drops else "")))
            stream = getattr(st.node, "stream", None)
            if stream is not None:
                cs = stream.stats
                xruns += cs.input_overflows + cs.output_underflows
            # a device that stopped delivering (unplugged, sound server gone) is a dropout too
            stalled = getattr(st.node, "_stalled", False)
            xruns += getattr(st.node, "reopens", 0) + stalled
            if stalled:
                lost.append(st.id)
            ring = getattr(st.node, "ring", None)
            rate = getattr(st.node.params, "sample_rate", 0)
            if st.node.is_source and ring is not None and ring.overflows and rate:
                dropped += ring.overflows / rate
        last = next((e for e in reversed(eng.recent_events)
                     if e.type != "transcript.partial"), None)
        ev = f" | last: {last.type} @{last.time_s:.1f}s" if last else ""
        if lost:
            ev = f" | {', '.join(lost)}: device lost, reopening" + ev
        if dropped:
            ev = f" | BEHIND: {dropped:.1f} s of input dropped" + ev
        loads.sort(key=lambda b: -b[0])  # the busiest (the recogniser) first
        # most useful first: a narrow terminal cuts the end of the line
        return (f"{eng.audio_seconds:7.1f}s  in [{meter}] {db:5.0f} dB | cpu "
                + (", ".join(t for _, t in loads[:3]) or "idle") + f" | xruns {xruns}{ev}")


def _secs(s: float) -> str:
    return f"{s:.1f}" if s >= 10 else f"{s:.2f}"


def _summary(stats: dict[str, Any]) -> str:
    startup = stats.get("startup_seconds", 0.0)
    after = f" after {_secs(startup)} s of start-up" if startup >= 0.1 else ""
    drain = stats.get("drain_seconds", 0.0)
    if drain >= 0.1:  # the nodes finishing their work after the end of the input
        after += f"; then {_secs(drain)} s of end-of-stream drain"
    lines = [f"summary: {_secs(stats['audio_seconds'])} s of audio in "
             f"{_secs(stats['wall_seconds'])} s ({stats['speed']:.1f}x real time{after}), "
             "engine overhead "
             f"{stats['engine_overhead']['mean_ms']:.3f} ms per {stats['quantum_ms']:.0f} ms "
             "quantum"]
    for nid, n in stats["nodes"].items():
        extra = ""
        if "queue_drops" in n:
            extra = f", queue max {n['queue_max_depth']}, drops {n['queue_drops']}"
        if n.get("input_overflows") or n.get("output_underflows"):
            extra += (f", overflows {n.get('input_overflows', 0)}, underflows "
                      f"{n.get('output_underflows', 0)}")
        rate = max(n.get("granted_rate") or 1, 1)
        if n.get("reopens"):
            if n["type"] == "sink.speaker":
                extra += f", output lost and reopened {n['reopens']}x"
            else:
                extra += (f", input lost and reopened {n['reopens']}x "
                          f"({n.get('zero_filled_frames', 0) / rate:.1f} s of silence)")
        if n.get("dropped_frames") and n["type"] == "sink.speaker":
            extra += f", {n['dropped_frames'] / rate:.1f} s of output dropped"
        if n.get("frames_over_max_s"):  # sink.array
            extra += f", {n['frames_over_max_s']} frames past max_s not kept"
        if n.get("ring_overflow_frames"):  # the graph could not keep up with the device
            extra += (f", {n['ring_overflow_frames'] / rate:.1f} s of input dropped (the graph "
                      "fell behind real time)")
        if n.get("late_deliveries") and "granted_rate" in n:  # a device, not a feed
            why = "including the device loss" if n.get("reopens") else "machine busy?"
            extra += (f", audio arrived late {n['late_deliveries']}x (longest gap "
                      f"{n['longest_gap_s']:.1f} s; {why})")
        if n.get("errors"):
            extra += f", errors {n['errors']}"
        if n.get("clipped_samples"):
            extra += (f", {n['clipped_samples']} samples clipped (the file's format holds "
                      "-1..1: lower the gain or use subtype FLOAT)")
        if "events_by_group" in n:  # a sound monitor: what it heard, and its side outputs
            heard = ", ".join(f"{g} {k}" for g, k in n["events_by_group"].items()) or "none"
            extra += f"; sound events: {heard}"
            for key, label in (("clips_written", "clips saved"), ("clips_failed", "not saved"),
                               ("clips_dropped", "dropped (disk too slow)"),
                               ("clips_pruned", "oldest deleted (evidence_max_mb)"),
                               ("webhook_posted", "webhook posts"),
                               ("webhook_failed", "failed"),
                               ("webhook_dropped", "dropped (endpoint behind)"),
                               ("webhook_undelivered_at_end", "still queued at the end"),
                               ("clips_unsaved_at_end", "clips still queued at the end")):
                if n.get(key):
                    extra += f", {label} {n[key]}"
        if n.get("flush_ms", 0) >= 10:  # waiting at the end (a speaker playing out)
            extra += f"; end-of-stream drain {n['flush_ms']:.0f} ms"
        lines.append(f"  {nid:<12} {n['type']:<18} cpu {n['cpu_mean_ms']:.3f} ms mean, "
                     f"{n['cpu_p99_ms']:.3f} ms p99, {n['cpu_max_ms']:.3f} ms max{extra}")
    # wall-clock latency means something only when the audio arrived in real time
    lat = stats.get("latency", {}) if stats.get("realtime", True) else {}
    shown = [(t, lat[t]) for t in ("vad.speech_stopped", "transcript.partial",
                                     "transcript.final", "sound.started") if t in lat]
    if shown:
        lines.append("  latency after the audio it describes (wall clock, p50 / p90): " + ", ".join(
            f"{t} {v['wall_p50_s']:.2f} / {v['wall_p90_s']:.2f} s" for t, v in shown))
    if stats["events"]:
        lines.append("  events: " + ", ".join(f"{k} {v}" for k, v in
                                              sorted(stats["events"].items())))
    files = [f for n in stats["nodes"].values() for f in n.get("files", [])]
    if files:
        rel = any(not Path(f).is_absolute() for f in files)
        lines.append("  wrote: " + ", ".join(files)
                     + (" (relative to the current directory)" if rel else ""))
    return "\n".join(lines)


def cmd_validate(args: argparse.Namespace) -> int:
    from .graph import load_graph
    from .runtime import Engine

    _load_plugins(args.plugin)
    bad = 0
    for g in args.graphs:
        try:
            spec = load_graph(g)
            # stage 5 (format negotiation) needs real sources; use a stand-in file for mics
            Engine(spec, input=None if not _needs_mic(spec) else "feed")
            print(f"{g}: ok ({len(spec.nodes)} nodes)")
        except EngineError as e:
            bad += 1
            print(f"{e}", file=sys.stderr)
    return 2 if bad else 0


def _needs_mic(spec) -> bool:
    return any(n.type == "source.microphone" for n in spec.nodes)


def cmd_nodes(args: argparse.Namespace) -> int:
    """``audio-engine nodes [TYPE]``: what graph files can use, from the classes themselves."""
    import dataclasses
    import inspect
    import re

    from .graph import unknown_type
    from .node import AUDIO, node_types

    _load_plugins(args.plugin)
    types = node_types()

    def plain(text: str) -> str:  # docstring markup out: ``x`` and :meth:`x` as x
        return re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")

    if not args.type:
        for name in sorted(types):
            doc = plain(" ".join((types[name].__doc__ or "").split()))
            doc = re.sub(r"^``[\w.]+``:\s*", "", doc).split(". ")[0].rstrip(".")
            print(f"{name:<18} {doc[:100] + ('...' if len(doc) > 100 else '')}")
        print("\naudio-engine nodes TYPE: its ports and parameters")
        return 0
    if args.type not in types:
        raise EngineError(f"{unknown_type(args.type, types)} (audio-engine nodes lists them)")
    cls = types[args.type]
    print(f"{args.type}: {plain(inspect.cleandoc(cls.__doc__ or ''))}\n")

    def ports(d: dict) -> str:
        return ", ".join(f"{p} ({'audio' if k == AUDIO else 'events'})" for p, k in d.items()) \
            or "none"
    optional = getattr(cls, "optional_inputs", frozenset())
    print(f"inputs:  {ports(cls.inputs)}"
          + (f"; optional: {', '.join(sorted(optional))}" if optional else ""))
    print(f"outputs: {ports(cls.outputs)}")
    print(f"thread:  {cls.thread}" + (f" (queue {cls.queue_policy}, {cls.queue_size} items)"
                                      if cls.thread == "worker" else ""))
    fields = dataclasses.fields(cls.Params)
    if fields:
        print("params:")
    for f in fields:
        m = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING  # type: ignore
            else "(required)")
        limits = [f"{'>' if k == 'gt' else '>=' if k == 'ge' else '<' if k == 'lt' else '<='}"
                  f" {m[k]:g}" for k in ("gt", "ge", "lt", "le") if m.get(k) is not None]
        if m.get("choices"):
            limits.append("one of " + ", ".join(map(str, m["choices"])))
        typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        print(f"  {f.name} ({typ}) = {default!r}" + (f"  [{'; '.join(limits)}]" if limits
                                                       else ""))
        if m.get("doc"):
            print(f"      {plain(m['doc'])}")
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from .backends import list_devices

    devs = list_devices(args.backend)
    if not devs:
        print("no audio devices found")
        return 0
    print(f"{'':2}{'#':>3}  {'name':<40} {'host API':<10} {'in':>3} {'out':>3} "
          f"{'default rate':>12}")
    for d in devs:
        mark = ("<" if d.default_input else " ") + (">" if d.default_output else " ")
        print(f"{mark}{d.index:>3}  {d.name[:40]:<40} {d.hostapi[:10]:<10} "
              f"{d.max_input_channels:>3} {d.max_output_channels:>3} "
              f"{d.default_samplerate:>9.0f} Hz")
    print("(< default input, > default output)")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from .models.manifest import list_models, models_dir

    print(f"models in {models_dir()} (set AUDIO_ENGINE_MODELS to use another folder):")
    for r in list_models():
        opt = " (optional)" if r["optional"] else ""
        size = f"{r['size_mb']:>8.1f} MB" if r["size_mb"] else f"{'-':>8}   "
        print(f"  {r['name']:<16} {r['status']:<28} {size}  {r['license']}{opt}")
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from .models.manifest import fetch

    fetch(args.names or None, force=args.force, include_optional=args.all,
          log=lambda s: print(s, flush=True))
    return 0


def cmd_models_convert(args: argparse.Namespace) -> int:
    from .models.whisper_convert import convert_whisper

    ct2 = Path(args.ct2_dir)
    if not (ct2 / "model.bin").exists():
        raise EngineError(f"{ct2}: no model.bin here; expected a faster-whisper (CTranslate2) "
                          "model folder with model.bin, config.json and tokenizer.json")
    convert_whisper(ct2, Path(args.out_dir), quantize=args.quantize,
                    log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
