// Live view of audio-engine: /events WebSocket, /stats polling, optional microphone -> /ingest.
"use strict";
(() => {
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  const q = token ? "?token=" + encodeURIComponent(token) : "";
  const wsBase = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
  const $ = (id) => document.getElementById(id);
  const live = document.body.classList.contains("live");
  const MAX_FINALS = 200, TIMELINE_S = 300;
  const sounds = [];  // {group, start, end}
  let audioNow = 0;

  function setConn(ok, text) {
    const el = $("conn");
    if (!el) return;
    el.textContent = text;
    el.className = ok ? "" : "off";
  }

  function addFinal(ev) {
    const box = $("finals");
    const div = document.createElement("div");
    div.className = "final";
    const t = document.createElement("span");
    t.className = "t";
    t.textContent = (ev.start_sample / ev.sample_rate).toFixed(1) + " s";
    div.appendChild(t);
    div.appendChild(document.createTextNode(ev.text));
    box.appendChild(div);
    while (box.children.length > MAX_FINALS) box.removeChild(box.firstChild);
    box.scrollTop = box.scrollHeight;
    $("stable").textContent = "";
    $("unstable").textContent = "";
  }

  function drawTimeline() {
    const tl = $("timeline");
    if (!tl) return;
    tl.textContent = "";
    const t0 = Math.max(0, audioNow - TIMELINE_S);
    const lanes = [];  // one row per group, so overlapping events of two groups stay legible
    for (const s of sounds) {
      const end = s.end === null ? audioNow : s.end;
      if (end < t0) continue;
      let lane = lanes.indexOf(s.group);
      if (lane < 0) { lanes.push(s.group); lane = lanes.length - 1; }
      const el = document.createElement("div");
      el.className = "ev";
      el.style.top = (0.2 + 1.8 * lane) + "em";
      el.style.left = (100 * (Math.max(s.start, t0) - t0) / TIMELINE_S) + "%";
      el.style.width = (100 * (end - Math.max(s.start, t0)) / TIMELINE_S) + "%";
      el.textContent = s.group;
      el.title = s.group + " " + s.start.toFixed(1) + " s";
      tl.appendChild(el);
    }
    tl.style.height = (0.4 + 1.8 * Math.max(1, lanes.length)) + "em";
  }

  function onEvent(ev) {
    switch (ev.type) {
      case "transcript.partial":
        $("stable").textContent = ev.stable;
        $("unstable").textContent = ev.unstable;
        break;
      case "transcript.final":
        addFinal(ev);
        break;
      case "transcript.skipped":  // the segment got no final: clear its live guess
        $("stable").textContent = "";
        $("unstable").textContent = "";
        break;
      case "engine.level":
        audioNow = ev.audio_seconds;
        if (live) {
          $("level").style.width = Math.max(0, Math.min(100, (ev.db + 60) / 60 * 100)) + "%";
          $("db").textContent = ev.db.toFixed(0) + " dB";
          $("clock").textContent = ev.audio_seconds.toFixed(1) + " s";
        }
        break;
      case "vad.speech_started":
      case "vad.speech_stopped":
        if (live) {
          const sp = ev.type === "vad.speech_started";
          $("vad").textContent = sp ? "speech" : "silence";
          $("vad").className = sp ? "speech" : "silence";
        }
        break;
      case "sound.started":
        sounds.push({group: ev.group, start: ev.time_s, end: null});
        break;
      case "sound.stopped":
        for (let i = sounds.length - 1; i >= 0; i--) {
          if (sounds[i].group === ev.group && sounds[i].end === null) {
            sounds[i].end = ev.time_s; break;
          }
        }
        break;
    }
  }

  let retry = 500;
  function connect() {
    const ws = new WebSocket(wsBase + "/events" + q);
    ws.onopen = () => {  // the server replays recent captions and sound events first
      retry = 500; setConn(true, "live");
      $("finals").replaceChildren(); sounds.length = 0;
    };
    ws.onmessage = (m) => { try { onEvent(JSON.parse(m.data)); } catch (e) { console.error(e); } };
    ws.onclose = (e) => {
      setConn(false, "disconnected" + (e.reason ? ": " + e.reason : ""));
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
  }

  async function pollStats() {
    try {
      const r = await fetch("/stats" + q, {cache: "no-store"});
      const s = await r.json();
      $("graph").textContent = s.graph;
      const body = $("nodes").tBodies[0];
      body.textContent = "";
      for (const [id, n] of Object.entries(s.nodes)) {
        const tr = body.insertRow();
        const load = 100 * n.cpu_mean_ms / s.quantum_ms;
        const cells = [id, n.type, load.toFixed(1) + " %", n.cpu_p99_ms.toFixed(2),
          n.queue_depth === undefined ? "" : n.queue_depth + " / max " + n.queue_max_depth,
          n.queue_drops === undefined ? "" : n.queue_drops, n.errors];
        cells.forEach((c, i) => {
          const td = tr.insertCell(); td.textContent = c; if (i >= 2) td.className = "num";
        });
      }
      $("status").textContent = `${s.audio_seconds.toFixed(1)} s audio, ` +
        `${s.speed}x real time, ${s.web.clients} viewer${s.web.clients === 1 ? "" : "s"}` +
        (s.web.feed ? `, ingest ${s.web.ingest_active ? "active" : "idle"}` : "");
    } catch (e) { /* server gone: the WebSocket shows it */ }
  }

  async function startMic() {
    const btn = $("mic");
    try {
      const stream = await navigator.mediaDevices.getUserMedia({audio: {
        echoCancellation: false, noiseSuppression: false, autoGainControl: false}});
      const ctx = new AudioContext();
      await ctx.audioWorklet.addModule("/static/mic-worklet.js");
      const src = ctx.createMediaStreamSource(stream);
      const node = new AudioWorkletNode(ctx, "mic-sender");
      const ws = new WebSocket(wsBase + "/ingest" + q);
      ws.binaryType = "arraybuffer";
      ws.onopen = () => {
        ws.send(JSON.stringify({rate: ctx.sampleRate, format: "f32le", channels: 1}));
        node.port.onmessage = (m) => { if (ws.readyState === 1) ws.send(m.data.buffer); };
        src.connect(node);
        if (btn) { btn.textContent = "mic on"; btn.disabled = true; }
        document.body.dataset.mic = "on";
      };
      ws.onclose = (e) => {
        document.body.dataset.mic = "closed: " + e.reason;
        if (btn) { btn.textContent = "mic"; btn.disabled = false; }
        stream.getTracks().forEach((t) => t.stop());
        ctx.close();
      };
    } catch (e) {
      document.body.dataset.mic = "error: " + e;
      console.error(e);
    }
  }

  connect();
  if (live) {
    pollStats();
    setInterval(pollStats, 1000);
    setInterval(drawTimeline, 1000);
    $("mic").onclick = startMic;
    if (params.get("mic") === "1") startMic();
  }
})();
