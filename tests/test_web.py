"""The web view and WebSocket API (engine/web/server.py) with the real captions graph: aiohttp
clients at the HTTP/WebSocket level (events, stats, ingest, abuse), then headless Chromium
driven through its DevTools protocol (live page, browser microphone -> /ingest)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.events import TranscriptFinal
from engine.graph import load_graph
from engine.models.manifest import models_dir
from engine.models.whisper_convert import converted_ok
from engine.runtime import Engine

from .conftest import EVENTS, REPO, load_mono, shared

aiohttp = pytest.importorskip("aiohttp")
from engine.web.server import WebServer  # noqa: E402

GRAPH = REPO / "graphs" / "live_captions.toml"
JFK = "speech/jfk.flac"
JFK_REF = ("And so my fellow Americans, ask not what your country can do for you, ask what you "
           "can do for your country.")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

needs_model = pytest.mark.skipif(not converted_ok(models_dir() / "whisper-tiny.en"),
                                 reason="whisper-tiny.en not fetched (make models)")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed "
                                    "(tools/install_system.sh installs it)")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def coverage(ref: str, got: str) -> float:
    """Share of reference words present in ``got`` (loose: order and repeats ignored)."""
    have = set(words(got))
    ref_w = words(ref)
    return sum(w in have for w in ref_w) / max(len(ref_w), 1)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _collect(ws: Any, out: list[dict], until: Any, timeout: float) -> None:
    """Read JSON messages from ``ws`` into ``out`` until ``until(out)`` or ``timeout``."""
    end = time.monotonic() + timeout
    while not until(out) and time.monotonic() < end:
        try:
            msg = await ws.receive(timeout=max(0.05, end - time.monotonic()))
        except asyncio.TimeoutError:
            break
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        out.append(json.loads(msg.data))


async def _send(ws: Any, data: str | bytes) -> None:
    """Send one message; the server may cut the connection before a refused (oversize) frame
    has been written completely, which the client sees as a lost connection."""
    try:
        await (ws.send_bytes(data) if isinstance(data, bytes) else ws.send_str(data))
    except (ConnectionError, aiohttp.ClientError):
        pass


def _finals(msgs: list[dict]) -> str:
    return " ".join(m["text"] for m in msgs if m["type"] == "transcript.final")


# ------------------------------------------------------------------------- HTTP / WebSocket


@needs_model
def test_events_and_stats_while_a_file_streams(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    eng = Engine(load_graph(GRAPH), input=shared(JFK), realtime=False)
    srv = WebServer(eng, "127.0.0.1", 0).start()  # before the engine: no event missed
    base = srv.url.rstrip("/")

    async def main() -> tuple[list[dict], dict]:
        async with aiohttp.ClientSession() as s:
            async with s.get(base + "/stats") as r:
                assert r.status == 200
                before = await r.json()
            assert before["graph"] == "live-captions" and "asr" in before["nodes"]
            ws = await s.ws_connect(base + "/events")
            msgs: list[dict] = []
            eng.start()
            await _collect(ws, msgs, lambda m: not eng.running and any(
                x["type"] == "transcript.final" for x in m), 120.0)
            await asyncio.get_running_loop().run_in_executor(None, eng.wait, 60.0)
            await _collect(ws, msgs, lambda m: False, 0.5)  # the drain's finals
            async with s.get(base + "/stats") as r:
                stats = await r.json()
            await ws.close()
            return msgs, stats

    try:
        msgs, stats = _run(main())
    finally:
        srv.stop()
        eng.stop()
    types = {m["type"] for m in msgs}
    # (partials depend on timing when the file runs faster than real time; finals never do)
    assert "transcript.final" in types, types
    assert "vad.speech_started" in types
    assert "vad.probability" not in types
    fin = next(m for m in msgs if m["type"] == "transcript.final")
    ev = TranscriptFinal(0, 16000)
    assert set(ev.to_dict()) <= set(fin)  # the Event.to_dict schema
    assert coverage(JFK_REF, _finals(msgs)) >= 0.6, _finals(msgs)
    assert stats["audio_seconds"] > 10 and stats["events"]["transcript.final"] >= 1
    assert stats["web"]["clients"] == 1


@needs_model
def test_a_late_client_gets_recent_captions_again(tmp_path, monkeypatch):
    """A page opened (or reloaded) after the speech still shows its captions: /events first
    replays the recent finals and sound events, marked replay, each once."""
    monkeypatch.chdir(tmp_path)
    eng = Engine(load_graph(GRAPH), input=shared(JFK), realtime=False)
    srv = WebServer(eng, "127.0.0.1", 0).start()
    base = srv.url.rstrip("/")
    eng.start()
    assert eng.wait(120)
    eng.stop()

    async def main() -> list[dict]:
        async with aiohttp.ClientSession() as s:
            ws = await s.ws_connect(base + "/events")
            msgs: list[dict] = []
            await _collect(ws, msgs, lambda m: False, 1.0)
            await ws.close()
            return msgs

    try:
        msgs = _run(main())
    finally:
        srv.stop()
    finals = [m for m in msgs if m["type"] == "transcript.final"]
    assert len(finals) == eng.stats()["events"]["transcript.final"] >= 3
    assert all(m["replay"] is True for m in finals)
    assert [m["sample"] for m in finals] == sorted(m["sample"] for m in finals)
    assert coverage(JFK_REF, _finals(msgs)) >= 0.6, _finals(msgs)


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    """A captions engine fed through /ingest, with its server (small client queue)."""
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("web"))
    eng = Engine(load_graph(GRAPH), input="feed")
    srv = WebServer(eng, "127.0.0.1", 0, client_queue=32)
    srv.start()
    eng.start()
    try:
        yield eng, srv
    finally:
        srv.stop()
        eng.end_feed()
        eng.stop()
        os.chdir(cwd)


async def _stream_pcm(s: Any, base: str, x: np.ndarray, rate: int, speed: float = 3.0) -> None:
    """Send mono float audio to /ingest as s16le in 100 ms frames, ``speed`` x real time."""
    ws = await s.ws_connect(base + "/ingest")
    await ws.send_str(json.dumps({"rate": rate, "format": "s16le", "channels": 1}))
    ready = json.loads((await ws.receive(timeout=5)).data)
    assert ready["type"] == "ingest.ready" and ready["rate"] == 48000
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
    step = rate // 10
    for i in range(0, len(pcm), step):
        await ws.send_bytes(pcm[i:i + step].tobytes())
        await asyncio.sleep(0.1 / speed)
    await ws.close()


def _raw_ws_that_never_reads(port: int) -> socket.socket:
    """A WebSocket handshake on a socket with a tiny receive buffer that is never read."""
    sk = socket.socket()
    sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sk.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sk.sendall((f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sk.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    return sk


@needs_model
def test_abuse_leaves_engine_and_server_running(fed):
    """Abuse while audio streams in real time: no audio dropped, memory bounded."""
    import psutil

    eng, srv = fed
    base = srv.url.rstrip("/")
    WSErr = aiohttp.WSServerHandshakeError
    # other speech than the ingest test's, so its finals cannot satisfy that test
    speech, _ = load_mono(shared("speech/librispeech-test-clean__1089-134686-0000.flac"), 48000)
    streaming = threading.Event()

    def feed_realtime() -> None:  # an application capturing audio itself, 10 ms at a time
        t0, i = time.monotonic(), 0
        while not streaming.is_set():
            eng.feed(speech[(i * 480) % (len(speech) - 480):][:480])
            i += 1
            time.sleep(max(0.0, t0 + i * 0.01 - time.monotonic()))

    before = eng.stats()["nodes"]
    rss0 = psutil.Process().memory_info().rss
    feeder = threading.Thread(target=feed_realtime, daemon=True)
    feeder.start()

    async def main() -> dict:
        async with aiohttp.ClientSession() as s:
            # 50 clients at once, several rounds: at most 32 are admitted, the rest get 503
            for _ in range(3):
                async def one() -> Any:
                    try:
                        return await s.ws_connect(base + "/events")
                    except WSErr as e:
                        return e.status
                    except (aiohttp.ClientError, ConnectionError):
                        return -1  # refused by a reset under load: also not admitted
                res = await asyncio.gather(*(one() for _ in range(50)))
                socks = [r for r in res if not isinstance(r, int)]
                assert 0 < len(socks) <= 32
                assert all(r in (503, -1) for r in res if isinstance(r, int))
                await asyncio.gather(*(w.close() for w in socks))
            # cross-origin browsers are refused
            with pytest.raises(WSErr) as e:
                await s.ws_connect(base + "/events", headers={"Origin": "http://evil.example"})
            assert e.value.status == 403
            # oversize text on /events, binary on /events
            ws = await s.ws_connect(base + "/events", max_msg_size=0)
            await _send(ws, "x" * (2 << 20))
            await _collect(ws, [], lambda m: False, 5.0)
            assert ws.closed and ws.close_code in (1009, 1006), ws.close_code  # 1006: cut mid-frame
            ws = await s.ws_connect(base + "/events")
            await ws.send_bytes(b"\x00\x01")
            await _collect(ws, [], lambda m: False, 5.0)
            assert ws.closed and ws.close_code in (1003, 1006), ws.close_code
            # /ingest: binary first, bad header, partial frame, text after header, oversize
            for first, second in [(b"\x00" * 4, None), ("{not json", None),
                                  ('{"rate": 16000, "format": "mp3"}', None),
                                  ('{"rate": 16000, "format": "s16le"}', b"\x00\x00\x00"),
                                  ('{"rate": 16000, "format": "s16le"}', "hello"),
                                  ('{"rate": 16000, "format": "f32le"}', b"\x00" * (2 << 20))]:
                ws = await s.ws_connect(base + "/ingest")
                await _send(ws, first)
                if second is not None:
                    await _send(ws, second)
                await _collect(ws, [], lambda m: False, 5.0)
                # 1006: the connection was cut while the oversize frame was still being sent
                big = isinstance(second, bytes) and len(second) > 1 << 20
                assert ws.closed and ws.close_code in ((1009, 1006) if big else (1003, 1009)), \
                    (first, ws.close_code)
            # a client that never reads: flooded, it is dropped; others are unaffected
            loop = asyncio.get_running_loop()
            sk = await loop.run_in_executor(None, _raw_ws_that_never_reads, srv.port)
            big = TranscriptFinal(0, 16000, "flood", text="word " * 4000)
            for _ in range(400):
                srv._on_event(big)
                await asyncio.sleep(0.002)
                if srv.counters["slow_dropped"]:
                    break
            await asyncio.sleep(0.5)
            sk.close()
            assert srv.counters["slow_dropped"] >= 1
            # still answering, engine still running
            ws = await s.ws_connect(base + "/events")
            got: list[dict] = []
            await _collect(ws, got, lambda m: any(x["type"] == "engine.level" for x in m), 5.0)
            await ws.close()
            assert got
            async with s.get(base + "/stats") as r:
                assert r.status == 200
                return await r.json()

    try:
        stats = _run(main())
    finally:
        streaming.set()
        feeder.join(5)
    rss_growth = (psutil.Process().memory_info().rss - rss0) / 1e6
    after = eng.stats()["nodes"]
    assert eng.running and eng.error is None
    assert stats["web"]["malformed_closed"] >= 8 and stats["web"]["clients_refused"] >= 1
    assert after["mic"]["ring_overflow_frames"] == before["mic"]["ring_overflow_frames"]
    assert after["asr"]["queue_drops"] == 0 and after["log"]["queue_drops"] == 0
    assert after["mic"]["cpu_calls"] > before["mic"]["cpu_calls"] + 50  # audio really flowed
    assert rss_growth < 100, f"RSS grew {rss_growth:.0f} MB under abuse"


@needs_model
def test_ingest_s16le_speech_comes_back_as_captions(fed):
    eng, srv = fed
    base = srv.url.rstrip("/")
    x, sr = load_mono(shared(JFK), 16000)  # 16 kHz: the server resamples to the graph's 48 kHz
    x = np.concatenate([x, np.zeros(sr * 2, np.float32)])  # silence ends the utterance

    async def main() -> list[dict]:
        async with aiohttp.ClientSession() as s:
            ev = await s.ws_connect(base + "/events")
            msgs: list[dict] = []
            sender = asyncio.ensure_future(_stream_pcm(s, base, x, sr, speed=3.0))
            await _collect(ev, msgs, lambda m: sender.done() and coverage(
                JFK_REF, _finals(m)) >= 0.6, 90.0)
            await sender
            await ev.close()
            return msgs

    msgs = _run(main())
    assert coverage(JFK_REF, _finals(msgs)) >= 0.6, _finals(msgs)
    assert srv.counters["ingest_frames"] >= 11 * 48000 and eng.running


@needs_model
def test_ingest_client_leaving_ends_its_caption(tmp_path, monkeypatch):
    """`--ingest` runs the feed live (feed_idle_s): when the client stops sending (pause or
    disconnect, no trailing silence sent) the graph goes on with silence at the wall clock's
    pace, so the VAD sees the speaker stop and the last caption is finalised, not held until
    Ctrl-C."""
    monkeypatch.chdir(tmp_path)
    eng = Engine(load_graph(GRAPH), input="feed", feed_idle_s=0.5)
    srv = WebServer(eng, "127.0.0.1", 0).start()
    eng.start()
    base = srv.url.rstrip("/")
    x, sr = load_mono(shared(JFK), 16000)
    last = len(x) - sr + int(np.argmax(np.abs(x[-sr:])))
    x = x[:last]  # the client leaves in the middle of the last word ("country")

    def last_phrase(m: list[dict]) -> bool:
        return any(f["type"] == "transcript.final" and f["start_sample"] > 7.5 * 16000
                   for f in m)

    async def main() -> tuple[list[dict], float]:
        async with aiohttp.ClientSession() as s:
            ev = await s.ws_connect(base + "/events")
            msgs: list[dict] = []
            await _stream_pcm(s, base, x, sr, speed=3.0)
            left = time.monotonic()
            await _collect(ev, msgs, last_phrase, 15.0)
            await ev.close()
            return msgs, time.monotonic() - left

    try:
        msgs, waited = _run(main())
        st = eng.stats()
    finally:
        srv.stop()
        eng.end_feed()
        eng.stop()
    assert last_phrase(msgs), _finals(msgs)
    assert coverage(JFK_REF, _finals(msgs)) >= 0.6, _finals(msgs)
    assert waited < 10.0, waited
    assert st["nodes"]["mic"]["zero_filled_frames"] > 0.3 * 48000


def test_hostport_and_cli_guards(capsys):
    from engine.cli import main
    from engine.web.server import parse_hostport

    assert parse_hostport("8765") == ("127.0.0.1", 8765)
    assert parse_hostport("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_hostport("[::1]:9000") == ("::1", 9000)
    for bad in ("99999", "127.0.0.1:70000", "host:http"):
        with pytest.raises(ValueError, match="port"):
            parse_hostport(bad)
    assert main(["run", str(GRAPH), "--token", "x"]) == 2
    assert "--token needs --serve" in capsys.readouterr().err
    assert main(["run", str(GRAPH), "--ingest"]) == 2
    assert "--ingest needs --serve" in capsys.readouterr().err
    assert main(["run", str(GRAPH), "--serve", "0.0.0.0:0"]) == 2
    assert "needs a token" in capsys.readouterr().err


@needs_model
def test_token_and_overlay_page(fed):
    eng, _ = fed
    with pytest.raises(ValueError, match="token"):
        WebServer(eng, "0.0.0.0", 0)
    srv = WebServer(eng, "127.0.0.1", 0, token="s3cret").start()
    base = srv.url.rstrip("/")

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            for path in ("/stats", "/", "/captions"):
                async with s.get(base + path) as r:
                    assert r.status == 401
            async with s.get(base + "/stats", headers={"Authorization": "Bearer s3cret"}) as r:
                assert r.status == 200
            async with s.get(base + "/captions?token=s3cret") as r:
                assert r.status == 200 and 'class="overlay"' in await r.text()
            async with s.get(base + "/static/style.css") as r:  # page code: no token needed
                assert r.status == 200 and "background: transparent" in await r.text()
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await s.ws_connect(base + "/events")
            ws = await s.ws_connect(base + "/events?token=s3cret")
            got: list[dict] = []
            await _collect(ws, got, lambda m: bool(m), 5.0)
            await ws.close()
            assert got

    try:
        _run(main())
    finally:
        srv.stop()


# ------------------------------------------------------------------------- real browser


class Chromium:
    """Headless Chromium with a DevTools endpoint; ``evaluate`` and ``screenshot`` a page."""

    def __init__(self, url: str, *extra: str):
        self.tmp = tempfile.mkdtemp(prefix="chromium-")
        self.proc = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--autoplay-policy=no-user-gesture-required",
             "--remote-debugging-port=0", f"--user-data-dir={self.tmp}",
             "--window-size=1280,720", *extra, url],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(ln) for ln in self.proc.stderr],
                         daemon=True).start()
        end = time.monotonic() + 30
        self.port = 0
        while time.monotonic() < end and not self.port:
            try:
                ln = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", ln)
            if m:
                self.port = int(m.group(1))
        if not self.port:
            self.close()
            raise RuntimeError("chromium did not open its DevTools port")
        self._id = 0

    async def connect(self, s: Any) -> None:
        async with s.get(f"http://127.0.0.1:{self.port}/json/list") as r:
            pages = [t for t in await r.json() if t["type"] == "page"]
        self.ws = await s.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)

    async def call(self, method: str, **params: Any) -> dict:
        self._id += 1
        await self.ws.send_str(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            m = json.loads((await self.ws.receive(timeout=30)).data)
            if m.get("id") == self._id:
                return m.get("result", {})

    async def evaluate(self, expr: str) -> Any:
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r.get("result", {}).get("value")

    async def screenshot(self, path: Path) -> None:
        r = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(r["data"]))

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


async def _wait_for(ch: Chromium, expr: str, timeout: float) -> Any:
    end = time.monotonic() + timeout
    v = None
    while time.monotonic() < end:
        v = await ch.evaluate(expr)
        if v:
            return v
        await asyncio.sleep(0.25)
    return v


@needs_model
@needs_chromium
@pytest.mark.slow
def test_browser_live_page_shows_captions(tmp_path, monkeypatch):
    """Real speech followed by a real smoke alarm, streamed in real time through the captions +
    sound-events graph: the page shows the caption text and the alarm on its timeline. Served
    with a token, as a user serving beyond loopback must (the page's own script and stylesheet
    load without it; its /events and /stats requests carry it)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    monkeypatch.chdir(tmp_path)
    alarm = EVENTS / "sherpa-audiotagging__7.wav"
    if not alarm.exists():
        pytest.skip(f"clip not found: {alarm}")
    speech, sr = sf.read(str(shared(JFK)), dtype="float32", always_2d=True)
    speech = resample_poly(speech.mean(axis=1), 160, 441).astype(np.float32)
    beep, bsr = sf.read(str(alarm), dtype="float32", always_2d=True)
    assert bsr == 16000
    wav = tmp_path / "speech_then_alarm.wav"
    sf.write(wav, np.concatenate([speech, np.zeros(16000, np.float32), beep.mean(axis=1),
                                  np.zeros(16000, np.float32)]), 16000)
    eng = Engine(load_graph(REPO / "graphs" / "captions_and_sounds.toml"), input=wav,
                 realtime=True)
    eng.prepare()
    srv = WebServer(eng, "127.0.0.1", 0, token="s3cret").start()
    ch = Chromium(srv.url + "?token=s3cret")
    shot = tmp_path / "web_screenshot.png"

    async def main() -> tuple[str, Any]:
        async with aiohttp.ClientSession() as s:
            await ch.connect(s)
            conn = await _wait_for(ch, "document.getElementById('conn').textContent === 'live'",
                                   20.0)
            assert conn, "the page never connected to /events"
            eng.start()
            await asyncio.get_running_loop().run_in_executor(None, eng.wait, 60.0)
            await asyncio.sleep(1.5)  # last events + one /stats poll
            text = await ch.evaluate("document.getElementById('finals').innerText")
            rows = await ch.evaluate("document.querySelectorAll('#nodes tbody tr').length")
            sounds = await ch.evaluate(
                "Array.from(document.querySelectorAll('#timeline .ev')).map(e => e.textContent)")
            await ch.screenshot(shot)
            return text or "", rows, sounds

    try:
        text, rows, sounds = _run(main())
    finally:
        ch.close()
        srv.stop()
        eng.stop()
    out = REPO / "out"
    out.mkdir(exist_ok=True)
    shutil.copy(shot, out / "web_screenshot.png")
    assert shot.stat().st_size > 10_000
    assert rows == len(eng.stats()["nodes"]), rows
    assert coverage(JFK_REF, text) >= 0.6, text
    assert "alarm" in (sounds or []), sounds


@needs_model
@needs_chromium
@pytest.mark.slow
def test_browser_microphone_to_ingest(tmp_path, monkeypatch):
    import soundfile as sf

    monkeypatch.chdir(tmp_path)
    x, sr = load_mono(shared(JFK), 48000)
    wav = tmp_path / "mic.wav"
    sf.write(str(wav), np.concatenate([x, np.zeros(sr, np.float32)]), sr, subtype="PCM_16")
    eng = Engine(load_graph(GRAPH), input="feed")
    srv = WebServer(eng, "127.0.0.1", 0).start()
    eng.start()

    async def main() -> tuple[list[dict], Any]:
        async with aiohttp.ClientSession() as s:
            ev = await s.ws_connect(srv.url + "events")
            ch = Chromium(srv.url + "?mic=1", "--use-fake-device-for-media-stream",
                          "--use-fake-ui-for-media-stream",
                          f"--use-file-for-fake-audio-capture={wav}")
            try:
                await ch.connect(s)
                mic = await _wait_for(ch, "document.body.dataset.mic", 20.0)
                msgs: list[dict] = []
                await _collect(ev, msgs, lambda m: coverage(JFK_REF, _finals(m)) >= 0.6, 60.0)
            finally:
                ch.close()
            await ev.close()
            return msgs, mic

    try:
        msgs, mic = _run(main())
    finally:
        srv.stop()
        eng.end_feed()
        eng.stop()
    assert mic == "on", mic
    assert srv.counters["ingest_frames"] > 48000
    assert coverage(JFK_REF, _finals(msgs)) >= 0.6, _finals(msgs)
