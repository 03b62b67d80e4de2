// The browser client: microphone -> realtime WebSocket (/v1/realtime) -> reply audio played as it streams.
"use strict";
const $ = (id) => document.getElementById(id);
const stats = { audioChunks: 0, playedMs: 0, ttfaMs: null, turns: [], errors: [], transcripts: [] };
window.stepaudioStats = stats;  // read by the browser test
let ws = null, ctx = null, mic = null, playAt = 0, sources = [], speechStoppedAt = null, current = null;

function b64(buf) {
  let s = ""; const bytes = new Uint8Array(buf);
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function play(base64) {
  const raw = atob(base64), n = raw.length >> 1, pcm = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let v = raw.charCodeAt(2 * i) | (raw.charCodeAt(2 * i + 1) << 8);
    pcm[i] = (v >= 32768 ? v - 65536 : v) / 32768;
  }
  const buf = ctx.createBuffer(1, n, 24000);
  buf.copyToChannel(pcm, 0);
  const src = ctx.createBufferSource();
  src.buffer = buf; src.connect(ctx.destination);
  playAt = Math.max(playAt, ctx.currentTime + 0.02);
  src.start(playAt);
  playAt += buf.duration;
  src.onended = () => { stats.playedMs += buf.duration * 1000; $("played").textContent = `${Math.round(stats.playedMs)} ms`; };
  sources.push(src);
}

function stopPlayback() {  // barge-in: the user speaks over the reply
  for (const s of sources) { try { s.stop(); } catch (e) { /* already ended */ } }
  sources = []; playAt = 0;
}

function turnItem() {
  const li = document.createElement("li");
  li.innerHTML = '<div class="user"></div><div class="bot"></div>';
  $("turns").appendChild(li);
  return li;
}

function onEvent(e) {
  switch (e.type) {
    case "session.created": $("status").textContent = "listening"; break;
    case "input_audio_buffer.speech_started":
      stopPlayback(); $("status").textContent = "hearing you"; current = turnItem(); break;
    case "input_audio_buffer.speech_stopped": speechStoppedAt = performance.now(); $("status").textContent = "thinking"; break;
    case "conversation.item.input_audio_transcription.completed":
      stats.transcripts.push(e.transcript);
      (current || (current = turnItem())).querySelector(".user").textContent = e.transcript; break;
    case "response.audio_transcript.delta":
      (current || (current = turnItem())).querySelector(".bot").textContent += e.delta; break;
    case "response.audio.delta":
      if (stats.audioChunks++ === 0 || stats.ttfaMs === null) {
        if (speechStoppedAt !== null) { stats.ttfaMs = performance.now() - speechStoppedAt; $("ttfa").textContent = `${Math.round(stats.ttfaMs)} ms`; }
      }
      $("status").textContent = "speaking"; play(e.delta); break;
    case "stepaudio.tool_call.started": {
      const li = document.createElement("li"); li.id = `tool-${e.call_id}`; li.textContent = `${e.name}(${e.arguments}) ...`;
      $("tools").appendChild(li); break;
    }
    case "stepaudio.tool_call.finished": {
      const li = $(`tool-${e.call_id}`); if (li) li.textContent = `${e.name} -> ${e.output}`; break;
    }
    case "response.done":
      stats.turns.push(e.response);
      if (current && e.response.status === "cancelled") current.querySelector(".bot").classList.add("cancelled");
      $("timings").textContent = Object.entries(e.response.timings_ms || {}).map(([k, v]) => `${k} ${v}`).join(", ") || "-";
      $("status").textContent = "listening"; current = null; speechStoppedAt = null; break;
    case "error": stats.errors.push(e.error); $("status").textContent = `error: ${e.error.message}`; break;
  }
}

async function start() {
  ctx = new AudioContext();
  await ctx.audioWorklet.addModule("/static/worklet.js");
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
  mic = new AudioWorkletNode(ctx, "capture");
  ctx.createMediaStreamSource(stream).connect(mic);
  const url = new URL("/v1/realtime", location.href); url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(url);
  ws.onopen = () => ws.send(JSON.stringify({ type: "session.update", session: { voice: "alloy", turn_detection: { type: "server_vad" } } }));
  ws.onmessage = (m) => onEvent(JSON.parse(m.data));
  ws.onclose = () => { $("status").textContent = "disconnected"; };
  mic.port.onmessage = (m) => { if (ws.readyState === 1) ws.send(JSON.stringify({ type: "input_audio_buffer.append", audio: b64(m.data) })); };
  $("talk").textContent = "Stop"; $("talk").classList.add("on");
}

function stop() {
  if (ws) ws.close();
  if (ctx) ctx.close();
  ws = ctx = mic = null;
  $("talk").textContent = "Start talking"; $("talk").classList.remove("on"); $("status").textContent = "idle";
}

$("talk").addEventListener("click", () => (ws ? stop() : start().catch((e) => { $("status").textContent = `microphone: ${e.message}`; })));
