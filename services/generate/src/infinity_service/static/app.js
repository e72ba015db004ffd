// Infinity web page: plain JS, no build step. Talks to the same service's JSON API:
// GET /v1/models (defaults, limits), POST /v1/images/stream (server-sent events), GET /v1/gallery,
// POST /v1/edits/stream (an image and a brushed mask; the same events).
"use strict";

// Aspect-ratio templates as W:H names (the model's templates are height / width).
const ASPECTS = [
  ["1:1", 1.0], ["4:3", 0.75], ["3:4", 1.333], ["5:4", 0.8], ["4:5", 1.25], ["3:2", 0.666], ["2:3", 1.5],
  ["16:9", 0.5625], ["9:16", 1.778], ["2:1", 0.5], ["1:2", 2.0], ["5:2", 0.4], ["2:5", 2.5], ["3:1", 0.333],
  ["1:3", 3.0],
];

const $ = (id) => document.getElementById(id);
const state = { busy: false, defaults: {}, lastEdit: null };
window.infinityPage = state; // read by the browser test (the last edit request the page sent)

function headers() {
  const h = { "content-type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["authorization"] = `Bearer ${key}`;
  return h;
}

function setStatus(text, kind = "") {
  const el = $("status");
  el.textContent = text;
  el.className = `status ${kind}`;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.error ? body.error.message : JSON.stringify(body);
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

function option(select, value, label, selected) {
  const opt = document.createElement("option");
  opt.value = value;
  opt.textContent = label;
  opt.selected = selected;
  select.appendChild(opt);
}

async function loadModel() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (response.status === 401) {
    $("auth").open = true;
    $("model").textContent = "API key required";
    return false;
  }
  if (!response.ok) {
    $("model").textContent = await errorMessage(response);
    return false;
  }
  const model = (await response.json()).data[0];
  state.defaults = model.defaults;
  $("model").textContent = `${model.id} · ${model.device}`;
  const aspect = $("aspect");
  aspect.replaceChildren();
  const defaultAspect = String(model.defaults.aspect_ratio);
  for (const [name] of ASPECTS) option(aspect, name, name, name === defaultAspect);
  if (![...aspect.options].some((o) => o.selected)) option(aspect, defaultAspect, defaultAspect, true);
  const resolution = $("resolution");
  resolution.replaceChildren();
  const native = model.defaults.native_size; // [H, W] when the model has its own size
  for (const r of model.resolutions) {
    const label = r === "native" && native ? `native ${native[1]}×${native[0]}` : r;
    option(resolution, r, label, r === model.defaults.resolution);
  }
  syncAspect();
  $("cfg").max = model.limits.cfg_range[1];
  $("cfg").min = model.limits.cfg_range[0];
  $("cfg").value = model.defaults.cfg;
  $("cfg-value").textContent = model.defaults.cfg;
  $("prompt").maxLength = model.limits.max_prompt_chars;
  return true;
}

// The native size fixes the shape: the aspect-ratio control only applies to named resolutions.
function syncAspect() {
  $("aspect").disabled = $("resolution").value === "native";
}

async function loadGallery() {
  const response = await fetch("/v1/gallery", { headers: headers() });
  if (!response.ok) return;
  const items = (await response.json()).data;
  const list = $("gallery");
  list.replaceChildren();
  for (const item of items) {
    const li = document.createElement("li");
    const img = document.createElement("img");
    img.src = `data:image/png;base64,${item.png_base64}`;
    img.alt = item.prompt;
    img.title = `${item.prompt} (seed ${item.seed}, ${item.aspect_ratio}) — click to reuse`;
    img.addEventListener("click", () => {
      $("prompt").value = item.prompt;
      $("seed").value = item.seed;
      if ([...$("aspect").options].some((o) => o.value === item.aspect_ratio)) $("aspect").value = item.aspect_ratio;
    });
    const caption = document.createElement("span");
    caption.textContent = item.prompt;
    li.append(img, caption);
    list.appendChild(li);
  }
  $("gallery-empty").hidden = items.length > 0;
}

// One placeholder per scale; previews fill them in as they arrive.
function resetStrip(numScales) {
  const strip = $("strip");
  strip.replaceChildren();
  for (let k = 1; k <= numScales; k++) {
    const li = document.createElement("li");
    li.className = "pending";
    li.dataset.scale = k;
    const label = document.createElement("span");
    label.textContent = `${k}`;
    li.appendChild(label);
    strip.appendChild(li);
  }
}

function showPreview(event) {
  const strip = $("strip");
  if (strip.children.length !== event.num_scales) resetStrip(event.num_scales);
  const li = strip.children[event.scale - 1];
  const img = document.createElement("img");
  img.src = `data:image/png;base64,${event.png_base64}`;
  img.alt = `scale ${event.scale}: ${event.grid[0]}×${event.grid[1]} tokens`;
  img.title = img.alt;
  const label = document.createElement("span");
  label.textContent = `${event.grid[0]}×${event.grid[1]}`;
  li.replaceChildren(img, label);
  li.className = "done";
  setStatus(`scale ${event.scale} of ${event.num_scales} (${event.grid[0]}×${event.grid[1]} tokens)`);
}

function showImage(event) {
  $("final-image").src = `data:image/png;base64,${event.png_base64}`;
  $("final-image").alt = event.prompt;
  $("final-caption").textContent = `“${event.prompt}” · seed ${event.seed} · ${event.width}×${event.height}`;
  $("final").hidden = false;
  // What the model could not follow (e.g. words its text encoder does not know).
  $("warnings").textContent = (event.warnings || []).join(" ");
  $("warnings").hidden = !(event.warnings || []).length;
}

// POST with a JSON body and read the text/event-stream answer (EventSource can only GET).
async function* readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length) yield [name, JSON.parse(data.join("\n"))];
    }
  }
}

async function generate(submitEvent) {
  submitEvent.preventDefault();
  if (state.busy) return;
  const prompt = $("prompt").value.trim();
  if (!prompt) {
    setStatus("Type a prompt first.", "error");
    return;
  }
  const body = {
    prompt,
    resolution: $("resolution").value,
    seed: Number.parseInt($("seed").value || "0", 10),
    cfg: Number.parseFloat($("cfg").value),
  };
  if (!$("aspect").disabled) body.aspect_ratio = $("aspect").value;
  await stream("/v1/images/stream", body, "generated");
}

// POST ``body`` to a streaming endpoint and show its previews and image; counts finished runs in body[data-<counter>].
async function stream(url, body, counter) {
  state.busy = true;
  $("generate").disabled = true;
  $("edit-submit").disabled = true;
  document.body.classList.add("busy");
  $("final").hidden = true;
  $("warnings").hidden = true;
  $("strip").replaceChildren();
  setStatus("sending…");
  const started = performance.now();
  try {
    const response = await fetch(url, { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!response.ok) {
      const retry = response.headers.get("retry-after");
      setStatus(`${await errorMessage(response)}${retry ? ` (retry in ${retry} s)` : ""}`, "error");
      return;
    }
    for await (const [name, event] of readEvents(response)) {
      if (name === "queued") setStatus(`queued (position ${event.position})`);
      else if (name === "started") setStatus(`generating (batch of ${event.batch_size})`);
      else if (name === "preview") showPreview(event);
      else if (name === "image") showImage(event);
      else if (name === "error") setStatus(event.message, "error");
      else if (name === "done") {
        const seconds = ((performance.now() - started) / 1000).toFixed(1);
        setStatus(`done in ${seconds} s`, "ok");
        document.body.dataset[counter] = String(Number(document.body.dataset[counter] || 0) + 1);
      }
    }
  } catch (err) {
    setStatus(`request failed: ${err}`, "error");
  } finally {
    state.busy = false;
    $("generate").disabled = false;
    $("edit-submit").disabled = $("edit-stage").hidden;
    $("edit-reuse").disabled = !$("final-image").src;
    document.body.classList.remove("busy");
    loadGallery();
  }
}

// ---------------------------------------------------------------------------------------------------- editing
// The image is drawn at its own size on #edit-image; the mask is brushed on #edit-mask (same size, shown scaled
// over it) and sent as a binary PNG: white where the brush went (alpha >= 128), black elsewhere.
function loadEditImage(src) {
  const img = new Image();
  img.onload = () => {
    for (const id of ["edit-image", "edit-mask"]) {
      $(id).width = img.naturalWidth;
      $(id).height = img.naturalHeight;
    }
    $("edit-image").getContext("2d").drawImage(img, 0, 0);
    $("edit-stage").hidden = false;
    $("edit-submit").disabled = state.busy;
    if (!$("edit-prompt").value) $("edit-prompt").value = $("prompt").value;
    setStatus(`editing a ${img.naturalWidth}×${img.naturalHeight} image: brush the region to redraw`);
  };
  img.onerror = () => setStatus("that file is not an image the browser can read", "error");
  img.src = src;
}

function brushAt(event) {
  const canvas = $("edit-mask");
  const box = canvas.getBoundingClientRect();
  const x = ((event.clientX - box.left) / box.width) * canvas.width;
  const y = ((event.clientY - box.top) / box.height) * canvas.height;
  const radius = (Number($("brush").value) / 256) * canvas.width;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#ff2d55";
  ctx.beginPath();
  ctx.arc(x, y, radius, 0, 2 * Math.PI);
  ctx.fill();
}

function maskBase64() {
  const source = $("edit-mask");
  const pixels = source.getContext("2d").getImageData(0, 0, source.width, source.height);
  const out = document.createElement("canvas");
  out.width = source.width;
  out.height = source.height;
  const ctx = out.getContext("2d");
  const binary = ctx.createImageData(source.width, source.height);
  let painted = 0;
  for (let i = 0; i < pixels.data.length; i += 4) {
    const value = pixels.data[i + 3] >= 128 ? 255 : 0;
    painted += value > 0;
    binary.data.set([value, value, value, 255], i);
  }
  ctx.putImageData(binary, 0, 0);
  return painted ? out.toDataURL("image/png").split(",", 2)[1] : null;
}

async function edit() {
  if (state.busy || $("edit-stage").hidden) return;
  const prompt = $("edit-prompt").value.trim();
  if (!prompt) {
    setStatus("Type what the edited image should show.", "error");
    return;
  }
  const body = {
    prompt,
    image_png_base64: $("edit-image").toDataURL("image/png").split(",", 2)[1],
    mode: $("edit-mode").value,
    seed: Number.parseInt($("seed").value || "0", 10),
    cfg: Number.parseFloat($("cfg").value),
  };
  if (body.mode === "inpaint") {
    body.mask_png_base64 = maskBase64();
    if (!body.mask_png_base64) {
      setStatus("Brush over the region to redraw first.", "error");
      return;
    }
  }
  state.lastEdit = body;
  await stream("/v1/edits/stream", body, "edited");
}

function initEditing() {
  $("edit-upload").addEventListener("change", () => {
    const file = $("edit-upload").files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.onload = () => loadEditImage(reader.result);
    reader.readAsDataURL(file);
  });
  $("edit-reuse").addEventListener("click", () => loadEditImage($("final-image").src));
  $("edit-clear").addEventListener("click", () => {
    const canvas = $("edit-mask");
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  });
  $("brush").addEventListener("input", () => ($("brush-value").textContent = $("brush").value));
  let drawing = false;
  $("edit-mask").addEventListener("pointerdown", (e) => {
    drawing = true;
    $("edit-mask").setPointerCapture(e.pointerId);
    brushAt(e);
  });
  $("edit-mask").addEventListener("pointermove", (e) => drawing && brushAt(e));
  for (const name of ["pointerup", "pointercancel"]) $("edit-mask").addEventListener(name, () => (drawing = false));
  $("edit-submit").addEventListener("click", edit);
}

function init() {
  $("api-key").value = sessionStorage.getItem("infinity-api-key") || "";
  $("api-key").addEventListener("change", async () => {
    sessionStorage.setItem("infinity-api-key", $("api-key").value.trim());
    if (await loadModel()) loadGallery();
  });
  $("resolution").addEventListener("change", syncAspect);
  $("cfg").addEventListener("input", () => ($("cfg-value").textContent = $("cfg").value));
  $("dice").addEventListener("click", () => ($("seed").value = Math.floor(Math.random() * 2 ** 31)));
  $("form").addEventListener("submit", generate);
  initEditing();
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("form").requestSubmit();
  });
  loadModel().then((ok) => ok && loadGallery());
}

init();
