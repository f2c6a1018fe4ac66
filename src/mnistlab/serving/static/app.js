// The draw-a-digit page: strokes on a canvas, sent as PNG to /api/predict while drawing.
"use strict";
const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const strokes = [];          // each stroke: a list of [x, y] in canvas pixels
let drawing = null;          // the stroke being drawn
let inFlight = false, dirty = false, lastSent = 0;

function redraw() {
  ctx.fillStyle = "black";
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = "white";
  ctx.lineWidth = 18;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  for (const s of strokes) {
    ctx.beginPath();
    ctx.moveTo(s[0][0], s[0][1]);
    for (const [x, y] of s.slice(1)) ctx.lineTo(x, y);
    if (s.length === 1) ctx.lineTo(s[0][0] + 0.1, s[0][1]);
    ctx.stroke();
  }
}

function point(ev) {
  const r = pad.getBoundingClientRect();
  return [(ev.clientX - r.left) * pad.width / r.width, (ev.clientY - r.top) * pad.height / r.height];
}

pad.addEventListener("pointerdown", (ev) => {
  pad.setPointerCapture(ev.pointerId);
  drawing = [point(ev)];
  strokes.push(drawing);
  redraw();
  schedule();
});
pad.addEventListener("pointermove", (ev) => {
  if (!drawing) return;
  drawing.push(point(ev));
  redraw();
  schedule();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => { drawing = null; schedule(true); });
}
document.getElementById("clear").addEventListener("click", () => { strokes.length = 0; redraw(); show(null); });
document.getElementById("undo").addEventListener("click", () => { strokes.pop(); redraw(); strokes.length ? schedule(true) : show(null); });

// At most one request in flight, and at most one every 120 ms while drawing.
function schedule(now) {
  dirty = true;
  if (inFlight) return;
  const wait = now ? 0 : Math.max(0, 120 - (performance.now() - lastSent));
  setTimeout(send, wait);
}

async function send() {
  if (!dirty || inFlight) return;
  if (!strokes.length) { dirty = false; return; }
  dirty = false; inFlight = true; lastSent = performance.now();
  try {
    const blob = await new Promise((ok) => pad.toBlob(ok, "image/png"));
    const res = await fetch("/api/predict", { method: "POST", headers: { "Content-Type": "image/png" }, body: blob });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error ? body.error.message : res.statusText);
    if (strokes.length) show(body);
  } catch (err) {
    document.getElementById("confidence").textContent = "error: " + err.message;
  } finally {
    inFlight = false;
    if (dirty) schedule();
  }
}

const bars = document.getElementById("bars");
let classes = [...Array(10).keys()].map(String);

// Class names come from the model's checkpoint, which anyone can write: they are text, never markup.
function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

function buildBars() {
  bars.replaceChildren();
  classes.forEach((c, i) => {
    const li = element("li");
    const bar = element("div", "bar");
    bar.appendChild(element("span"));
    li.append(element("span", "", String(c)), bar, element("span", "p", "0%"));
    li.dataset.index = i;
    bars.appendChild(li);
  });
}

function show(r) {
  const digit = document.getElementById("digit");
  const conf = document.getElementById("confidence");
  const warn = document.getElementById("warning");
  const seen = document.getElementById("seen").getContext("2d");
  if (!r) {
    digit.textContent = "?"; digit.dataset.digit = ""; conf.textContent = "draw something"; warn.hidden = true;
    seen.fillStyle = "black"; seen.fillRect(0, 0, 28, 28);
    bars.querySelectorAll("li").forEach((li) => { li.classList.remove("top"); li.querySelector(".bar span").style.width = "0"; li.querySelector(".p").textContent = "0%"; });
    return;
  }
  digit.textContent = r.is_digit ? r.digit : "?";
  digit.dataset.digit = r.digit;
  conf.textContent = r.is_digit ? `${(100 * r.probability).toFixed(1)}% sure it is ${r.digit}`
    : `not read as a digit (the nearest is ${r.digit}, ${(100 * r.probability).toFixed(1)}%)`;
  warn.hidden = r.is_digit;
  warn.textContent = r.is_digit ? "" : `That doesn't look like a digit (score ${r.not_digit.toFixed(2)}): ${r.reasons.join("; ")}`;
  r.probabilities.forEach((p, i) => {
    const li = bars.children[i];
    li.classList.toggle("top", i === r.label);
    li.querySelector(".bar span").style.width = `${(100 * p).toFixed(1)}%`;
    li.querySelector(".p").textContent = `${(100 * p).toFixed(1)}%`;
  });
  const img = seen.createImageData(28, 28);
  r.image.flat().forEach((v, i) => { img.data.set([v, v, v, 255], 4 * i); });
  seen.putImageData(img, 0, 0);
}

fetch("/api/model").then((r) => r.json()).then((m) => {
  classes = m.classes; buildBars();
  const acc = m.test_accuracy ? `, test accuracy ${(100 * m.test_accuracy).toFixed(2)}%` : "";
  document.getElementById("model").textContent = `model: ${m.name} (${m.model}, ${m.dataset}${acc})`;
}).catch(() => buildBars());
buildBars();
redraw();
show(null);
