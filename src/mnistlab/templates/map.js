"use strict";
const D = JSON.parse(document.getElementById("map-data").textContent);
const N = D.x.length, canvas = document.getElementById("map"), ctx = canvas.getContext("2d");
const tip = document.getElementById("tip"), tipText = document.getElementById("tiptext");
const digit = document.getElementById("digit"), dctx = digit.getContext("2d");
const shown = D.classes.map(() => true);
let onlyMistakes = false, screen = null, grid = null, cell = 12, hovered = -1;
const atlas = new Image();
atlas.src = D.atlas;
digit.width = D.side[1]; digit.height = D.side[0];

function visible(i) {
  return shown[D.label[i]] && (!onlyMistakes || (D.pred && D.pred[i] !== D.label[i]));
}

function layout() {  // screen positions of every point, and a grid of cells for finding the nearest one
  const r = canvas.getBoundingClientRect(), dpr = window.devicePixelRatio || 1, pad = 10;
  canvas.width = Math.round(r.width * dpr); canvas.height = Math.round(r.height * dpr);
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  screen = new Float32Array(2 * N);
  for (let i = 0; i < N; i++) {
    screen[2 * i] = pad + D.x[i] * (r.width - 2 * pad);
    screen[2 * i + 1] = pad + (1 - D.y[i]) * (r.height - 2 * pad);
  }
  grid = new Map();
  for (let i = 0; i < N; i++) {
    const key = Math.floor(screen[2 * i] / cell) + "," + Math.floor(screen[2 * i + 1] / cell);
    if (!grid.has(key)) grid.set(key, []);
    grid.get(key).push(i);
  }
  draw();
}

function draw() {
  const r = canvas.getBoundingClientRect();
  ctx.clearRect(0, 0, r.width, r.height);
  const s = N > 20000 ? 1.5 : N > 5000 ? 2.2 : 4;
  for (let i = 0; i < N; i++) {
    if (!visible(i)) continue;
    ctx.fillStyle = D.colours[D.label[i]];
    ctx.fillRect(screen[2 * i] - s / 2, screen[2 * i + 1] - s / 2, s, s);
  }
  if (D.pred) {  // mistakes on top, as dark crosses
    ctx.strokeStyle = "black"; ctx.lineWidth = 1; ctx.beginPath();
    for (let i = 0; i < N; i++) {
      if (!visible(i) || D.pred[i] === D.label[i]) continue;
      const x = screen[2 * i], y = screen[2 * i + 1];
      ctx.moveTo(x - 3, y - 3); ctx.lineTo(x + 3, y + 3); ctx.moveTo(x + 3, y - 3); ctx.lineTo(x - 3, y + 3);
    }
    ctx.stroke();
  }
  if (hovered >= 0) {
    ctx.strokeStyle = "#111"; ctx.lineWidth = 2; ctx.beginPath();
    ctx.arc(screen[2 * hovered], screen[2 * hovered + 1], 6, 0, 2 * Math.PI); ctx.stroke();
  }
}

function nearest(x, y, radius) {
  let best = -1, bestD = radius * radius;
  const cx = Math.floor(x / cell), cy = Math.floor(y / cell), reach = Math.ceil(radius / cell);
  for (let gx = cx - reach; gx <= cx + reach; gx++) {
    for (let gy = cy - reach; gy <= cy + reach; gy++) {
      for (const i of grid.get(gx + "," + gy) || []) {
        if (!visible(i)) continue;
        const dx = screen[2 * i] - x, dy = screen[2 * i + 1] - y, d = dx * dx + dy * dy;
        if (d <= bestD) { bestD = d; best = i; }
      }
    }
  }
  return best;
}

function show(i, x, y) {
  hovered = i;
  if (i < 0) { tip.style.display = "none"; draw(); return; }
  const [h, w] = D.side, q = i % D.cols, r = Math.floor(i / D.cols);
  dctx.clearRect(0, 0, w, h);
  if (atlas.complete) dctx.drawImage(atlas, q * w, r * h, w, h, 0, 0, w, h);
  const label = D.classes[D.label[i]], pred = D.pred ? D.classes[D.pred[i]] : null;
  tipText.innerHTML = "";
  const lines = [["image", "#" + D.index[i]], ["label", label]];
  if (pred !== null) lines.push(["predicted", pred]);
  for (const [k, v] of lines) {
    const div = document.createElement("div");
    div.textContent = k + ": " + v;
    if (k === "predicted" && pred !== label) div.className = "wrong";
    div.dataset.field = k;
    tipText.appendChild(div);
  }
  tip.style.display = "block";
  const box = canvas.getBoundingClientRect();
  tip.style.left = Math.min(x + 14, box.width - tip.offsetWidth - 4) + "px";
  tip.style.top = Math.max(4, Math.min(y + 14, box.height - tip.offsetHeight - 4)) + "px";
  draw();
}

function pointer(ev) {
  const box = canvas.getBoundingClientRect(), x = ev.clientX - box.left, y = ev.clientY - box.top;
  show(nearest(x, y, ev.pointerType === "touch" ? 24 : 10), x, y);
}
canvas.addEventListener("pointermove", pointer);
canvas.addEventListener("pointerdown", pointer);
// A finger lifted also "leaves": keep a tapped point's card until the next tap.
canvas.addEventListener("pointerleave", ev => { if (ev.pointerType !== "touch") show(-1, 0, 0); });

const list = document.getElementById("classes");
D.classes.forEach((name, c) => {
  const row = document.createElement("label"), box = document.createElement("input"), sw = document.createElement("span");
  box.type = "checkbox"; box.checked = true; box.dataset.cls = c;
  box.addEventListener("change", () => { shown[c] = box.checked; show(-1, 0, 0); });
  sw.className = "swatch"; sw.style.background = D.colours[c];
  const count = D.label.filter(l => l === c).length;
  row.append(box, sw, document.createTextNode(name + " (" + count + ")"));
  list.appendChild(row);
});
function setAll(v) {
  list.querySelectorAll("input").forEach(b => { b.checked = v; shown[+b.dataset.cls] = v; });
  show(-1, 0, 0);
}
document.getElementById("all").onclick = () => setAll(true);
document.getElementById("none").onclick = () => setAll(false);
const mistakes = document.getElementById("mistakes");
if (!D.pred) document.getElementById("mistakes-row").style.display = "none";
mistakes.addEventListener("change", () => { onlyMistakes = mistakes.checked; show(-1, 0, 0); });

window.addEventListener("resize", layout);
atlas.onload = () => { document.body.dataset.ready = "1"; };
layout();
// For scripts and tests: where point i is on the page, and whether it is shown.
window.mapView = {
  n: N,
  clientPosition(i) { const b = canvas.getBoundingClientRect(); return {x: b.left + screen[2 * i], y: b.top + screen[2 * i + 1]}; },
  visible,
};
