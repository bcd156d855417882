// The page: speak a text through POST /generate/stream, or hold a conversation on WS /ws.
// Both play a fragmented MP4 through Media Source Extensions as it arrives.
"use strict";

const $ = (id) => document.getElementById(id);
const video = $("video");
// Read by the page's tests: how the current playback is going.
window.avatarState = { streaming: false, firstFrameMs: null, bytes: 0, error: null, backend: null };

let portraitBase64 = null; // the uploaded portrait, base64 without the data: prefix
let socket = null;

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
  if (isError) window.avatarState.error = text;
}

function logEvent(text) {
  const item = document.createElement("li");
  item.textContent = text;
  $("events").prepend(item);
}

// --- fMP4 reading -----------------------------------------------------------------------------

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

function boxSize(bytes, offset) {
  if (offset + 8 > bytes.length) return null;
  const size = new DataView(bytes.buffer, bytes.byteOffset + offset, 4).getUint32(0);
  return size >= 8 ? size : null;
}

function boxType(bytes, offset) {
  return String.fromCharCode(...bytes.subarray(offset + 4, offset + 8));
}

// Length of the init segment (ftyp + moov) at the start of bytes, or 0 while it is incomplete.
function initSegmentLength(bytes) {
  let offset = 0;
  while (true) {
    const size = boxSize(bytes, offset);
    if (size === null || offset + size > bytes.length) return 0;
    const type = boxType(bytes, offset);
    offset += size;
    if (type === "moov") return offset;
  }
}

// The codecs parameter for MSE from the init segment's avcC box (profile, constraints, level).
function mimeType(init) {
  for (let i = 4; i + 8 < init.length; i++) {
    if (init[i] === 0x61 && init[i + 1] === 0x76 && init[i + 2] === 0x63 && init[i + 3] === 0x43) { // "avcC"
      const hex = (n) => n.toString(16).padStart(2, "0");
      return `video/mp4; codecs="avc1.${hex(init[i + 5])}${hex(init[i + 6])}${hex(init[i + 7])}, mp4a.40.2"`;
    }
  }
  return 'video/mp4; codecs="avc1.640028, mp4a.40.2"';
}

// A MediaSource fed with byte chunks in order; the first chunks must hold the init segment.
class StreamPlayer {
  constructor(videoElement, startedAt) {
    this.video = videoElement;
    this.startedAt = startedAt;
    this.queue = [];
    this.pending = new Uint8Array(0);
    this.buffer = null;
    this.ended = false;
    this.chain = Promise.resolve(); // chunks are taken one after the other, in order
    this.source = new MediaSource();
    this.ready = new Promise((resolve) => this.source.addEventListener("sourceopen", resolve, { once: true }));
    this.video.src = URL.createObjectURL(this.source);
    this.watchFirstFrame();
  }

  watchFirstFrame() {
    const shown = () => {
      if (window.avatarState.firstFrameMs === null) {
        window.avatarState.firstFrameMs = Math.round(performance.now() - this.startedAt);
        $("first-frame").textContent = `${window.avatarState.firstFrameMs} ms`;
      }
    };
    if (this.video.requestVideoFrameCallback) this.video.requestVideoFrameCallback(shown);
    else this.video.addEventListener("playing", shown, { once: true });
  }

  push(chunk) {
    this.chain = this.chain.then(() => this.take(chunk));
    return this.chain;
  }

  async take(chunk) {
    window.avatarState.bytes += chunk.length;
    if (!this.buffer) {
      this.pending = concat(this.pending, chunk);
      const initLength = initSegmentLength(this.pending);
      if (!initLength) return;
      await this.ready;
      this.buffer = this.source.addSourceBuffer(mimeType(this.pending.subarray(0, initLength)));
      this.buffer.mode = "segments";
      this.buffer.addEventListener("updateend", () => this.drain());
      chunk = this.pending;
      this.pending = null;
    }
    this.queue.push(chunk);
    this.drain();
    if (this.video.paused) this.video.play().catch(() => {});
  }

  drain() {
    if (!this.buffer || this.buffer.updating) return;
    if (this.queue.length) {
      const parts = this.queue.splice(0, this.queue.length);
      this.buffer.appendBuffer(parts.reduce(concat));
      this.keepNearLive();
    } else if (this.ended && this.source.readyState === "open") {
      this.source.endOfStream();
    }
  }

  // A live session plays near its newest frames; a stall behind them is skipped.
  keepNearLive() {
    const ranges = this.buffer.buffered;
    if (ranges.length && ranges.end(ranges.length - 1) - this.video.currentTime > 3 && socket) {
      this.video.currentTime = ranges.end(ranges.length - 1) - 1;
    }
  }

  end() {
    this.chain.then(() => {
      this.ended = true;
      this.drain();
    });
  }
}

// --- Speak: POST /generate/stream ---------------------------------------------------------------

function requestBody() {
  const body = { text: $("text").value };
  if (portraitBase64) body.image = portraitBase64;
  if ($("voice").value) body.voice = $("voice").value;
  return body;
}

async function speak() {
  stopConversation();
  const startedAt = performance.now();
  Object.assign(window.avatarState, { firstFrameMs: null, bytes: 0, error: null });
  $("first-frame").textContent = "…";
  status("requesting");
  let response;
  try {
    response = await fetch("/generate/stream", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(requestBody()),
    });
  } catch (error) {
    status(`request failed: ${error}`, true);
    return;
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    status(`${response.status} ${body.error || ""}: ${body.detail || response.statusText}`, true);
    return;
  }
  $("backend").textContent = response.headers.get("X-Avatar-Backend") || "?";
  logEvent(`request ${response.headers.get("X-Request-ID")}`);
  const player = new StreamPlayer(video, startedAt);
  const reader = response.body.getReader();
  window.avatarState.streaming = true;
  status("streaming");
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      await player.push(value);
    }
    status("done");
  } catch (error) {
    status(`stream broke: ${error}`, true);
  } finally {
    window.avatarState.streaming = false;
    player.end();
  }
}

// --- Conversation: WS /ws -------------------------------------------------------------------------

function startConversation() {
  if (socket) { stopConversation(); return; }
  const startedAt = performance.now();
  Object.assign(window.avatarState, { firstFrameMs: null, bytes: 0, error: null });
  const player = new StreamPlayer(video, startedAt);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws`);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => {
    const start = { type: "start" };
    if (portraitBase64) start.image = portraitBase64;
    if ($("voice").value) start.voice = $("voice").value;
    socket.send(JSON.stringify(start));
    status("starting conversation");
  };
  socket.onmessage = (message) => {
    if (message.data instanceof ArrayBuffer) {
      window.avatarState.streaming = true;
      player.push(new Uint8Array(message.data));
      return;
    }
    const event = JSON.parse(message.data);
    if (event.error) {
      status(`${event.error}: ${event.detail}`, true);
    } else if (event.event === "ready") {
      $("backend").textContent = event.backend;
      status("conversation: type a text and press Say");
      $("say").disabled = false;
    } else {
      logEvent(`${event.event} ${event.id ?? ""} ${event.at !== undefined ? `at ${event.at} s` : ""}`);
    }
  };
  socket.onclose = () => {
    window.avatarState.streaming = false;
    player.end();
    socket = null;
    $("say").disabled = true;
    $("conversation").textContent = "Start conversation";
  };
  $("conversation").textContent = "End conversation";
}

function stopConversation() {
  if (socket) socket.close();
}

function sayInConversation() {
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ type: "say", text: $("text").value }));
  }
}

// --- Set-up --------------------------------------------------------------------------------------

$("portrait").addEventListener("change", () => {
  const file = $("portrait").files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    $("preview").src = reader.result;
    portraitBase64 = reader.result.split(",", 2)[1];
  };
  reader.readAsDataURL(file);
});
$("speak").addEventListener("click", speak);
$("conversation").addEventListener("click", startConversation);
$("say").addEventListener("click", sayInConversation);

fetch("/health").then((response) => response.json()).then((health) => {
  window.avatarState.backend = health.avatar_backend;
  $("backend").textContent = health.avatar_backend;
  const tts = (health.detail && health.detail.tts) || {};
  for (const name of tts.voices || []) {
    const option = document.createElement("option");
    option.value = name === tts.voice ? "" : name;
    option.textContent = name === tts.voice ? `${name} (default)` : name;
    $("voice").append(option);
  }
  status("ready");
}).catch((error) => status(`cannot reach the service: ${error}`, true));
