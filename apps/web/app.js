// The inkgrad serve page: reads /api/info, sends POST /api/generate/stream and draws the
// server-sent events (previews of x0_hat while the sampler runs, then the PNGs, then each
// picture's per-word attention maps). Cancel deletes the job and closes the stream. No
// framework, no network beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, running: false, jobId: null, abort: null, previewsSeen: 0 };

function setError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function setProgress(fraction) {
  const percent = Math.round(Math.max(0, Math.min(1, fraction)) * 100);
  $("progress").style.width = percent + "%";
  $("progress").setAttribute("aria-valuenow", String(percent));
}

function randomSeed() {
  // 53 bits, like the command line's fresh seeds (exact in a JavaScript number).
  const words = new Uint32Array(2);
  crypto.getRandomValues(words);
  return String((words[0] & 0x1fffff) * 4294967296 + words[1]);
}

function setRunning(running) {
  state.running = running;
  const button = $("generate");
  button.textContent = running ? "Cancel" : "Generate";
  button.classList.toggle("cancel", running);
}

// count tiles in the grid, each an <img> (and, when final, a download link around it).
function makeTiles(count) {
  const grid = $("grid");
  grid.replaceChildren();
  grid.classList.toggle("one", count === 1);
  $("empty").hidden = true;
  for (let i = 0; i < count; i++) {
    const tile = document.createElement("div");
    tile.className = "tile preview";
    const img = document.createElement("img");
    img.alt = "generating picture " + (i + 1);
    tile.append(img);
    grid.append(tile);
  }
}

function showPreviews(previews, step, steps) {
  const tiles = $("grid").children;
  previews.forEach((png, i) => {
    if (!tiles[i]) return;
    tiles[i].querySelector("img").src = "data:image/png;base64," + png;
    let badge = tiles[i].querySelector(".badge");
    if (!badge) {
      badge = document.createElement("span");
      badge.className = "badge";
      tiles[i].append(badge);
    }
    badge.textContent = "x\u0302\u2080 at step " + step + "/" + steps;
  });
  state.previewsSeen++;
}

function showImages(answer) {
  const grid = $("grid");
  grid.replaceChildren();
  grid.classList.toggle("one", answer.images.length === 1);
  const s = answer.settings;
  answer.images.forEach((png, i) => {
    const link = document.createElement("a");
    link.className = "tile final";
    link.href = "data:image/png;base64," + png;
    link.download = "inkgrad_" + answer.seed_string + "_" + (i + 1) + ".png";
    link.title = "download PNG (the settings are in its text chunk)";
    const img = document.createElement("img");
    img.alt = s.prompt + " (" + (i + 1) + ")";
    img.src = link.href;
    link.append(img);
    grid.append(link);
  });
  const parts = ["\u201c" + s.prompt + "\u201d", "seed " + answer.seed_string];
  if (s.steps !== undefined) {
    parts.push(s.sampler + ", " + s.steps + " steps, guidance " + s.guidance);
    if (s.negative_prompt) parts.push("not \u201c" + s.negative_prompt + "\u201d");
  }
  $("settings").textContent = parts.join(" \u00b7 ");
  if (answer.warnings && answer.warnings.length) $("status").textContent = answer.warnings.join("; ");
  if (answer.attention) showAttention(answer, 0);
}

function percent(value) {
  const p = value * 100;
  return (p >= 10 ? p.toFixed(0) : p.toFixed(1)) + "%";
}

// The attention view of picture `index`: a chooser of the pictures, then the null token and each
// word of the prompt as its heat map over the picture.
function showAttention(answer, index) {
  const view = $("attention-view");
  const attention = answer.attention;
  const picks = $("attention-picks");
  picks.replaceChildren(...answer.images.map((png, i) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "attention-pick";
    button.title = "picture " + (i + 1);
    button.setAttribute("aria-pressed", String(i === index));
    const img = document.createElement("img");
    img.alt = "picture " + (i + 1);
    img.src = "data:image/png;base64," + png;
    button.append(img);
    button.addEventListener("click", () => showAttention(answer, i));
    return button;
  }));
  const picture = "data:image/png;base64," + answer.images[index];
  $("attention-words").replaceChildren(...attention.pictures[index].map((word) => {
    const figure = document.createElement("figure");
    figure.className = "attention-word" + (word.null ? " null" : "");
    figure.dataset.word = word.text;
    figure.title = (word.null ? "the learned null token: attention that went to no word. " : "") +
        "share of all attention " + percent(word.share) + "; per pixel " + percent(word.min) +
        " to " + percent(word.max);
    const stack = document.createElement("div");
    stack.className = "stack";
    const base = document.createElement("img");
    base.className = "base";
    base.alt = "";
    base.src = picture;
    const heat = document.createElement("img");
    heat.className = "heat";
    heat.alt = "attention map of " + word.text;
    heat.src = "data:image/png;base64," + word.map;
    stack.append(base, heat);
    const caption = document.createElement("figcaption");
    const text = document.createElement("b");
    text.textContent = word.null ? "\u2205 null" : word.text;
    const share = document.createElement("span");
    share.textContent = percent(word.share);
    caption.append(text, " ", share);
    figure.append(stack, caption);
    return figure;
  }));
  $("attention-note").textContent = "Averaged over the heads, " + attention.steps + " sampler steps and " +
      attention.layers + " cross-attention layers. Each map runs from its own least (dark) to most " +
      "(bright) attended pixel; the percentage is the word's share of all attention.";
  view.hidden = false;
}

function hideAttention() {
  $("attention-view").hidden = true;
  $("attention-words").replaceChildren();
  $("attention-picks").replaceChildren();
}

function request() {
  const body = { prompt: $("prompt").value, count: Number($("count").value) };
  const seed = $("seed").value.trim();
  if (seed !== "") body.seed = seed;  // digits as a string keep all 64 bits; the server checks it
  if (state.info && state.info.has_sampler) {
    body.negative_prompt = $("negative").value;
    body.guidance = Number($("guidance").value);
    body.steps = Number($("steps").value);
    body.sampler = $("sampler").value;
    if (state.info.attention && $("attention").checked) body.attention = true;
  }
  return body;
}

// Reads server-sent events from a fetch response, calling onEvent(name, data) for each.
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (name) onEvent(name, JSON.parse(data));
    }
  }
}

async function generate() {
  setError("");
  const body = request();
  const count = Math.max(1, Math.min(16, Math.floor(body.count) || 1));
  state.abort = new AbortController();
  state.jobId = null;
  state.previewsSeen = 0;
  setRunning(true);
  setProgress(0);
  $("status").textContent = "waiting for the model…";
  $("settings").textContent = "";
  hideAttention();
  let finished = false;
  try {
    const response = await fetch("/api/generate/stream", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: state.abort.signal,
    });
    if (!response.ok) {
      let message = "HTTP " + response.status;
      try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
      if (response.status === 503) message += " (the server is busy: try again in a few seconds)";
      throw new Error(message);
    }
    makeTiles(count);
    await readEvents(response, (name, data) => {
      if (name === "job") {
        state.jobId = data.id;
        $("seed").placeholder = "random (last: " + data.seed + ")";
      } else if (name === "progress") {
        setProgress(data.step / data.steps);
        $("status").textContent = "step " + data.step + " of " + data.steps;
        if (data.previews) showPreviews(data.previews, data.step, data.steps);
      } else if (name === "done") {
        finished = true;
        setProgress(1);
        $("status").textContent = "done: " + data.images.length + " picture" + (data.images.length === 1 ? "" : "s");
        showImages(data);
      } else if (name === "error") {
        throw new Error(data.error);
      }
    });
    if (!finished && !state.abort.signal.aborted) throw new Error("the stream ended early");
  } catch (error) {
    if (state.abort.signal.aborted) {
      $("status").textContent = "cancelled";
    } else {
      $("status").textContent = "";
      setError(error.message);
    }
    if (!finished) { setProgress(0); }
  } finally {
    setRunning(false);
  }
}

function cancel() {
  if (state.jobId) fetch("/api/jobs/" + state.jobId, { method: "DELETE" }).catch(() => {});
  if (state.abort) state.abort.abort();
}

function applyInfo(info) {
  state.info = info;
  const modelLine = info.kind + " model, " + info.image.width + "\u00d7" + info.image.height +
      (info.image.channels === 1 ? " gray" : " RGB");
  $("model-line").textContent = modelLine + (info.has_sampler ? "" : " (no sampler: steps and guidance do not apply)");
  for (const element of document.querySelectorAll(".sampler-only")) element.hidden = !info.has_sampler;
  const select = $("sampler");
  select.replaceChildren(...info.samplers.map((name) => new Option(name, name, name === info.defaults.sampler, name === info.defaults.sampler)));
  $("steps").max = String(info.limits.steps[1]);
  $("steps").min = String(Math.min(10, info.limits.steps[1]));
  $("steps").value = String(info.defaults.steps);
  $("guidance").max = String(Math.min(20, info.limits.guidance[1]));
  $("guidance").value = String(info.defaults.guidance);
  $("count").max = String(info.limits.count[1]);
  $("count").value = String(info.defaults.count);
  $("prompt").maxLength = info.limits.max_prompt_bytes;
  $("negative").maxLength = info.limits.max_prompt_bytes;
  const examples = $("examples");
  examples.replaceChildren(...info.prompts.map((prompt) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = prompt;
    button.addEventListener("click", () => { $("prompt").value = prompt; $("prompt").focus(); });
    return button;
  }));
  if (!$("prompt").value && info.prompts.length) $("prompt").placeholder = info.prompts[0];
  if (!$("prompt").value && info.prompts.length) $("prompt").value = info.prompts[0];
  syncOutputs();
}

function syncOutputs() {
  $("guidance-value").textContent = Number($("guidance").value).toFixed(1);
  $("steps-value").textContent = $("steps").value;
}

function syncOpacity() {
  $("attention-words").style.setProperty("--heat-opacity", $("attention-opacity").value);
}

$("attention-opacity").addEventListener("input", syncOpacity);
syncOpacity();
$("guidance").addEventListener("input", syncOutputs);
$("steps").addEventListener("input", syncOutputs);
$("random-seed").addEventListener("click", () => { $("seed").value = randomSeed(); });
$("form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (state.running) cancel(); else generate();
});

fetch("/api/info")
  .then((response) => response.json())
  .then(applyInfo)
  .catch((error) => setError("cannot read /api/info: " + error.message));
