"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  const digitEl = $("digit");
  const statusEl = $("status");
  const fileEl = $("file");
  const preview = $("preview");
  const drop = $("drop");
  // Relative to this page, so that it works under any API Gateway stage, Function URL or
  // custom domain: `/prod` and `/prod/` both post to `/prod/predict`.
  const here = location.pathname;
  const last = here.slice(here.lastIndexOf("/") + 1);
  const endpoint = last === "" || last.includes(".") ? "predict" : last + "/predict";
  // Canvas pixels of 280: once the digit is scaled into MNIST's 20×20 box, about two pixels,
  // the width of MNIST's own pen.
  const PEN = 20;
  const DEBOUNCE_MS = 250;

  // The model's class labels and whether it reads drawings (a one-channel digit model) or
  // uploaded pictures, from the page's own markup.
  const main = document.querySelector("main");
  let labels = [];
  try {
    labels = JSON.parse(main.dataset.labels || "[]");
  } catch (_) {
    labels = [];
  }
  const drawn = main.dataset.mode === "draw";
  const start = drawn ? "Draw a digit to start." : "Upload a picture to start.";

  const fills = [];
  const pcts = [];
  const rows = [];
  for (let d = 0; d < labels.length; d++) {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = String(labels[d]);
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    track.appendChild(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    li.append(label, track, pct);
    $("bars").appendChild(li);
    fills.push(fill);
    pcts.push(pct);
    rows.push(li);
  }

  let strokes = 0; // strokes on the canvas since it was last cleared
  let ink = false;
  let drawing = null;
  let timer = 0;
  let inFlight = false;
  let queued = null; // what to send once the request in flight is answered
  let generation = 0; // bumped by Clear and uploads: older answers are dropped
  let seq = 0;

  const resetAnswer = (text) => {
    digitEl.textContent = "?";
    statusEl.textContent = text;
    statusEl.classList.remove("error");
    fills.forEach((f) => (f.style.width = "0"));
    pcts.forEach((p) => (p.textContent = ""));
    rows.forEach((r) => r.classList.remove("top"));
  };
  resetAnswer(start);

  const clearPreview = () => {
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.removeAttribute("src");
    preview.hidden = true;
  };

  const clearPad = () => {
    ctx.clearRect(0, 0, pad.width, pad.height);
    strokes = 0;
    ink = false;
    drawing = null;
    clearTimeout(timer);
  };

  const point = (e) => {
    const r = pad.getBoundingClientRect();
    return [((e.clientX - r.left) * pad.width) / r.width, ((e.clientY - r.top) * pad.height) / r.height];
  };

  const pen = () => {
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = PEN;
    ctx.strokeStyle = "#000";
    ctx.fillStyle = "#000";
  };

  pad.addEventListener("pointerdown", (e) => {
    if (e.pointerType === "mouse" && e.button !== 0) return;
    e.preventDefault();
    pad.setPointerCapture(e.pointerId);
    if (!ink) {
      clearPreview();
      generation++;
    }
    clearTimeout(timer);
    pen();
    drawing = { id: e.pointerId, at: point(e) };
    const [x, y] = drawing.at;
    ctx.beginPath();
    ctx.arc(x, y, PEN / 2, 0, 2 * Math.PI);
    ctx.fill();
    ink = true;
  });

  pad.addEventListener("pointermove", (e) => {
    if (!drawing || e.pointerId !== drawing.id) return;
    const all = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
    ctx.beginPath();
    ctx.moveTo(drawing.at[0], drawing.at[1]);
    for (const ev of all.length ? all : [e]) {
      drawing.at = point(ev);
      ctx.lineTo(drawing.at[0], drawing.at[1]);
    }
    ctx.stroke();
  });

  const endStroke = (e) => {
    if (!drawing || e.pointerId !== drawing.id) return;
    drawing = null;
    strokes++;
    clearTimeout(timer);
    timer = setTimeout(sendDrawing, DEBOUNCE_MS);
  };
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  function sendDrawing() {
    if (!ink) return;
    if (inFlight) {
      queued = sendDrawing;
      return;
    }
    inFlight = true;
    const n = strokes;
    const gen = generation;
    pad.toBlob((blob) => {
      if (blob) send(blob, "image/png", String(n), gen);
      else finish();
    }, "image/png");
  }

  function upload(file) {
    if (inFlight) {
      queued = () => upload(file);
      return;
    }
    clearPad();
    clearPreview();
    generation++;
    if (file.type === "image/png" || file.type === "image/jpeg") {
      preview.src = URL.createObjectURL(file);
      preview.hidden = false;
    }
    inFlight = true;
    send(file, file.type || "application/octet-stream", "upload", generation);
  }

  const explain = (status, data) => {
    const said = data && typeof data.error === "string" ? data.error : "";
    const what = {
      400: "the function could not read that input",
      413: "that is too large for the function",
      415: "only PNG and JPEG pictures (or a drawing) can be read",
    }[status];
    return `Error ${status}: ${what ? what + ". " : ""}${said}`;
  };

  async function send(body, type, source, gen) {
    document.body.dataset.state = "busy";
    statusEl.classList.remove("error");
    statusEl.textContent = "Asking the model…";
    const t0 = performance.now();
    try {
      const r = await fetch(endpoint, { method: "POST", headers: { "content-type": type }, body });
      let data = null;
      try {
        data = await r.json();
      } catch (_) {
        data = null;
      }
      const rtt = performance.now() - t0;
      if (gen !== generation) return; // cleared, or replaced by an upload, meanwhile
      $("rtt").textContent = `${rtt.toFixed(0)} ms`;
      const timing = /dur=([0-9.]+)/.exec(r.headers.get("server-timing") || "");
      $("fn").textContent = timing ? `${Number(timing[1]).toFixed(1)} ms` : "–";
      if (r.ok && data && Array.isArray(data.probabilities)) show(data);
      else fail(explain(r.status, data));
    } catch (err) {
      if (gen === generation) fail(`Could not reach the function: ${err.message}`);
    } finally {
      if (gen === generation) {
        digitEl.dataset.source = source;
        digitEl.dataset.seq = String(++seq);
      }
      finish();
    }
  }

  function finish() {
    inFlight = false;
    const next = queued;
    queued = null;
    if (next) next();
    else document.body.dataset.state = "idle";
  }

  function show(data) {
    const p = data.probabilities;
    const top = typeof data.class === "number" ? data.class : data.digit;
    const name = typeof data.label === "string" ? data.label : String(top);
    digitEl.textContent = name;
    statusEl.textContent = `The model reads ${name} (${(100 * p[top]).toFixed(1)} % sure).`;
    p.forEach((v, d) => {
      if (!fills[d]) return;
      fills[d].style.width = `${(100 * v).toFixed(1)}%`;
      pcts[d].textContent = `${(100 * v).toFixed(1)} %`;
      rows[d].classList.toggle("top", d === top);
    });
    if (typeof data.model === "string") $("model").textContent = data.model.slice(0, 12);
  }

  function fail(message) {
    resetAnswer(message);
    statusEl.classList.add("error");
  }

  $("clear").addEventListener("click", () => {
    clearPad();
    clearPreview();
    generation++;
    resetAnswer(start);
    digitEl.dataset.seq = String(++seq);
    digitEl.dataset.source = "0";
  });
  $("pick").addEventListener("click", () => fileEl.click());
  fileEl.addEventListener("change", () => {
    const f = fileEl.files && fileEl.files[0];
    fileEl.value = "";
    if (f) upload(f);
  });
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) upload(f);
  });
  document.body.dataset.state = "idle";
})();
