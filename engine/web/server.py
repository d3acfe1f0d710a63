"""Live web view and WebSocket API for a running :class:`~engine.runtime.Engine`.

The server runs an asyncio loop (aiohttp) on its own thread and never touches the audio or DSP
threads: events arrive through ``engine.on("*", cb)`` on the engine's dispatcher thread, are
serialised there once, and handed to the loop with ``call_soon_threadsafe`` into one bounded
queue per client.

Routes:

* ``/`` the live page, ``/captions`` a caption-only overlay (transparent background),
  ``/static/...`` their plain HTML/CSS/JS (no build step);
* ``/events`` (WebSocket): every event as JSON (``Event.to_dict()``), except
  ``vad.probability``. A client that connects (or reconnects, or reloads the page) first gets
  the last ``HISTORY`` captions and sound events again, marked ``"replay": true``, so an alarm
  that began before it joined is shown. The server adds ``{"type": "engine.level", "level":
  rms, "db": dB, "audio_seconds": s}`` ten times a second for the input meter;
* ``/stats``: ``engine.stats()`` as JSON, plus ``"web"`` (clients, drops, ingest counters);
* ``/ingest`` (WebSocket, only when the engine was made with ``input="feed"``): the first message
  is JSON ``{"rate": 16000, "format": "s16le" | "f32le", "channels": 1}``, then binary frames of
  interleaved PCM. Any rate is accepted and resampled on the server thread to the feed source's
  rate with :class:`~engine.dsp.resample.StreamingResampler`; more channels than the graph's
  mono source are averaged. One ingest client at a time (the feed ring has a single producer).

Safety: loopback by default; another address needs a token, checked on every request as
``?token=`` or the ``Authorization: Bearer`` / ``X-Token`` header. WebSockets whose ``Origin``
is not this host are refused. Messages are limited (1 MiB), clients bounded (32), a client whose
queue reaches ``client_queue`` messages is dropped, and a malformed frame closes only that
connection with a reason.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import threading
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from ..errors import EngineError
from ..events import Event
from ..nodes.feed import FeedAdapter
from ..pcm import MAX_CHANNELS, MAX_RATE, MIN_RATE, RAW_FORMATS, PcmFormat

STATIC = Path(__file__).resolve().parent / "static"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
SKIP = {"vad.probability"}
#: events a client gets again when it connects (the last HISTORY of them)
REPLAYED = {"transcript.final", "sound.started", "sound.stopped"}
HISTORY = 200
MAX_MSG = 1 << 20
MAX_CLIENTS = 32
CLIENT_QUEUE = 256
LEVEL_PERIOD_S = 0.1


def parse_hostport(text: str, default_host: str = "127.0.0.1",
                   default_port: int = 8765) -> tuple[str, int]:
    """``"8765"``, ``"0.0.0.0:8765"``, ``"[::1]:8765"`` or ``"host:"`` -> (host, port)."""
    text = text.strip()
    if not text:
        return default_host, default_port
    if text.isdigit():
        return parse_hostport(f"{default_host}:{text}", default_host, default_port)
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    host = host.strip("[]") or default_host
    if port and not port.isdigit():
        raise ValueError(f"--serve {text!r}: the port must be a number")
    p = int(port) if port else default_port
    if p > 65535:
        raise ValueError(f"--serve {text!r}: the port must be 0-65535, got {p}")
    return host, p


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


class _Client:
    """One /events WebSocket: its bounded queue and the task that writes it."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, size: int):
        self.ws = ws
        self.request = request
        self.queue: asyncio.Queue[str] = asyncio.Queue(size)
        self.task: asyncio.Task | None = None
        self.dropped = False


class WebServer:
    """Serves the live page and the WebSocket API of ``engine`` (see the module docstring).

    ``port=0`` picks a free port; :attr:`port` holds the real one after :meth:`start`.
    """

    def __init__(self, engine: Any, host: str = "127.0.0.1", port: int = 8765,
                 token: str | None = None, *, max_clients: int = MAX_CLIENTS,
                 max_msg_size: int = MAX_MSG, client_queue: int = CLIENT_QUEUE):
        if not is_loopback(host) and not token:
            raise ValueError(f"serving on {host} (not loopback) needs a token (--token)")
        self.engine = engine
        self.host = host
        self.port = port
        self.token = token
        self.max_clients = max_clients
        self.max_msg_size = max_msg_size
        self.client_queue = client_queue
        self._clients: set[_Client] = set()
        self._history: deque[str] = deque(maxlen=HISTORY)  # loop thread only
        self._sockets = 0  # open WebSockets, events and ingest together
        self._ingest_busy = False
        self.counters = {"clients_total": 0, "clients_refused": 0, "slow_dropped": 0,
                         "malformed_closed": 0, "ingest_frames": 0, "ingest_dropped_frames": 0}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._off: Any = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{h}:{self.port}/"

    def start(self) -> WebServer:
        """Start the server thread; returns once it is listening (raises if it cannot)."""
        self._thread = threading.Thread(target=self._run, name="web-server", daemon=True)
        self._thread.start()
        self._ready.wait(15.0)
        if self._error is not None:
            raise self._error
        if not self._ready.is_set():
            raise RuntimeError("web server did not start within 15 s")
        self._off = self.engine.on("*", self._on_event)
        return self

    def stop(self) -> None:
        """Unsubscribe, close every connection and end the server thread."""
        if self._off is not None:
            self._off()
            self._off = None
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(10.0)

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # noqa: BLE001 - reported to start()
            self._error = e
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._auth], client_max_size=self.max_msg_size)
        app.add_routes([
            web.get("/", self._page("index.html")),
            web.get("/captions", self._page("captions.html")),
            web.get("/stats", self._stats),
            web.get("/events", self._events),
            web.get("/ingest", self._ingest),
            web.static("/static", STATIC),
        ])
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=64)
        await site.start()
        sock = site._server.sockets[0] if site._server and site._server.sockets else None
        if sock is not None:
            self.port = sock.getsockname()[1]
        self._ready.set()
        ticker = asyncio.ensure_future(self._level_ticker())
        await self._stopping.wait()
        ticker.cancel()
        for c in list(self._clients):
            await self._drop(c, WSCloseCode.GOING_AWAY, "server stopping")
        await self._runner.cleanup()

    # ------------------------------------------------------------------ engine side
    def _on_event(self, ev: Event) -> None:
        """Dispatcher thread: serialise once, hand to the loop. Never blocks."""
        keep = ev.type in REPLAYED
        if ev.type in SKIP or not (self._clients or keep):
            return
        try:
            msg = json.dumps(ev.to_dict(), default=str)
        except (TypeError, ValueError):
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._fanout, msg, keep)
        except RuntimeError:  # loop closing
            pass

    def _fanout(self, msg: str, keep: bool = False) -> None:
        # history and client set change only on the loop thread, so a client that connects
        # gets each event once: in its replay or live
        if keep:
            self._history.append(msg)
        for c in list(self._clients):
            if c.dropped:
                continue
            try:
                c.queue.put_nowait(msg)
            except asyncio.QueueFull:
                self.counters["slow_dropped"] += 1
                asyncio.ensure_future(self._drop(c, WSCloseCode.POLICY_VIOLATION,
                                                 "slow client: send queue full"))

    async def _level_ticker(self) -> None:
        while True:
            await asyncio.sleep(LEVEL_PERIOD_S)
            if not self._clients:
                continue
            lvl = float(self.engine.input_level)
            db = 20 * math.log10(lvl) if lvl > 1e-9 else -120.0
            self._fanout(json.dumps({"type": "engine.level", "level": round(lvl, 6),
                                     "db": round(db, 1),
                                     "audio_seconds": round(self.engine.audio_seconds, 3),
                                     "running": bool(self.engine.running)}))

    # ------------------------------------------------------------------ HTTP
    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        # /static holds only the shipped page code (no data): a browser fetches it from the
        # page's <script> / <link> tags, which carry no token
        if self.token and not request.path.startswith("/static/"):
            got = request.query.get("token") or request.headers.get("X-Token", "")
            auth = request.headers.get("Authorization", "")
            if not got and auth.lower().startswith("bearer "):
                got = auth[7:].strip()
            if not hmac.compare_digest(got.encode(), self.token.encode()):
                return web.Response(status=401, text="missing or wrong token\n")
        return await handler(request)

    def _page(self, name: str) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})
        return handler

    async def _stats(self, request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        stats = await loop.run_in_executor(None, self.engine.stats)
        stats["web"] = self.web_stats()
        return web.json_response(stats, dumps=lambda o: json.dumps(o, default=str))

    def web_stats(self) -> dict[str, Any]:
        return {"clients": len(self._clients), "sockets": self._sockets,
                "ingest_active": self._ingest_busy,
                "feed": self._feed_node() is not None, **self.counters}

    # ------------------------------------------------------------------ WebSockets
    def _origin_ok(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser: the token (if any) is the check
        try:
            o = urlsplit(origin).netloc.lower()
        except ValueError:
            return False
        return o == request.host.lower()

    async def _open(self, request: web.Request) -> web.WebSocketResponse | web.Response:
        if not self._origin_ok(request):
            self.counters["clients_refused"] += 1
            return web.Response(status=403, text="cross-origin WebSocket refused\n")
        if self._sockets >= self.max_clients:
            self.counters["clients_refused"] += 1
            return web.Response(status=503, text=f"too many clients ({self.max_clients})\n")
        ws = web.WebSocketResponse(max_msg_size=self.max_msg_size, heartbeat=20.0,
                                   autoping=True)
        await ws.prepare(request)
        self._sockets += 1
        self.counters["clients_total"] += 1
        return ws

    async def _events(self, request: web.Request) -> web.StreamResponse:
        ws = await self._open(request)
        if not isinstance(ws, web.WebSocketResponse):
            return ws
        c = _Client(ws, request, self.client_queue)
        replay = list(self._history)[-max(self.client_queue // 2, 1):]
        for msg in replay:  # JSON objects: mark them as replayed
            c.queue.put_nowait(msg[:-1] + ', "replay": true}')
        self._clients.add(c)
        c.task = asyncio.ensure_future(self._writer(c))
        try:
            async for msg in ws:  # clients have nothing to say; oversize/binary -> closed
                if msg.type == WSMsgType.BINARY:
                    self.counters["malformed_closed"] += 1
                    await ws.close(code=WSCloseCode.UNSUPPORTED_DATA,
                                   message=b"/events takes no binary frames")
                    break
                if msg.type == WSMsgType.ERROR:
                    self.counters["malformed_closed"] += 1
                    break
        finally:
            self._clients.discard(c)
            if c.task is not None:
                c.task.cancel()
            self._sockets -= 1
        return ws

    async def _writer(self, c: _Client) -> None:
        try:
            while True:
                msg = await c.queue.get()
                await c.ws.send_str(msg)
        except (asyncio.CancelledError, ConnectionError, RuntimeError):
            pass

    async def _drop(self, c: _Client, code: int, reason: str) -> None:
        if c.dropped:
            return
        c.dropped = True
        self._clients.discard(c)
        if c.task is not None:
            c.task.cancel()
        try:
            await asyncio.wait_for(c.ws.close(code=code, message=reason.encode()), 1.0)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            tr = c.request.transport
            if tr is not None and not c.ws.closed:
                tr.abort()

    def _feed_node(self) -> Any:
        for st in getattr(self.engine, "sources", []):
            if hasattr(st.node, "push"):
                return st
        return None

    async def _ingest(self, request: web.Request) -> web.StreamResponse:
        feed = self._feed_node()
        if feed is None:
            return web.Response(status=409, text="the engine was not created with "
                                "input=\"feed\" (audio-engine run --serve --ingest)\n")
        if self._ingest_busy:
            return web.Response(status=409, text="another client is already ingesting\n")
        ws = await self._open(request)
        if not isinstance(ws, web.WebSocketResponse):
            return ws
        self._ingest_busy = True
        try:
            await self._ingest_loop(ws, feed)
        finally:
            self._ingest_busy = False
            self._sockets -= 1
        return ws

    async def _bad(self, ws: web.WebSocketResponse, reason: str) -> None:
        self.counters["malformed_closed"] += 1
        await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=reason.encode()[:120])

    async def _ingest_loop(self, ws: web.WebSocketResponse, feed: Any) -> None:
        spec = feed.specs["audio"]
        out_rate, out_ch = int(spec.sample_rate), int(spec.channels)
        first = await ws.receive()
        if first.type != WSMsgType.TEXT:
            if first.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                return
            await self._bad(ws, "first message must be JSON {rate, format, channels}")
            return
        try:
            hdr = json.loads(first.data)
            rate = int(hdr.get("rate", 0))
            fmt = str(hdr.get("format", "s16le"))
            ch = int(hdr.get("channels", 1))
            if not MIN_RATE <= rate <= MAX_RATE or fmt not in RAW_FORMATS \
                    or not 1 <= ch <= MAX_CHANNELS:
                raise ValueError
            if ch != out_ch and out_ch != 1:
                raise ValueError
        except (ValueError, TypeError, AttributeError):
            await self._bad(ws, f"bad header: need {{\"rate\": {MIN_RATE}..{MAX_RATE}, "
                                f"\"format\": {'|'.join(RAW_FORMATS)}, \"channels\": n}}")
            return
        pcm = PcmFormat(rate, ch, fmt)
        width = pcm.frame_bytes
        adapter = FeedAdapter(out_rate, out_ch)
        await ws.send_str(json.dumps({"type": "ingest.ready", "rate": out_rate,
                                      "channels": out_ch}))
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                data = msg.data
                if not data or len(data) % width:
                    await self._bad(ws, f"binary frame of {len(data)} bytes is not a whole "
                                        f"number of {width}-byte frames")
                    return
                x = pcm.decode(data)
                if not np.all(np.isfinite(x)):
                    await self._bad(ws, "non-finite samples")
                    return
                x = adapter.convert(x, rate)
                if len(x):
                    # a ring write (this thread is its producer) that never waits: a full ring
                    # (the graph stopped consuming) drops and counts
                    try:
                        got = feed.node.push(x, lambda: False)
                    except EngineError:  # not started yet, or ended
                        got = 0
                    self.counters["ingest_frames"] += int(got)
                    self.counters["ingest_dropped_frames"] += len(x) - int(got)
            elif msg.type == WSMsgType.TEXT:
                await self._bad(ws, "after the header only binary PCM frames are accepted")
                return
            elif msg.type == WSMsgType.ERROR:
                self.counters["malformed_closed"] += 1
                return
