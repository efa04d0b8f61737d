// sketch-rnn in the browser: draw on the board, the model finishes the drawing (POST /api/complete).
// Drawings are kept in the data's own units (QuickDraw pixels): the board spans VIEW times the
// median size of the training sketches (`extent` of /api/info), whatever its size on screen.
"use strict";

const VIEW = 1.6;
const INK = "#1a1a1a", MACHINE = "#d0352b";
const $ = (id) => document.getElementById(id);
const board = $("board"), ink = $("ink"), machine = $("machine");

let info = null;
let span = 256;        // data units across the board
let strokes = [];      // the user's drawing: strokes of absolute [x, y] points
let current = null;    // the stroke being drawn
let drawings = [];     // earlier drawings, for interpolation
let shown = null;      // what the model drew: {rows, origin, upto}
let last = null;       // the last model action, for re-roll and a new temperature
let seed = 1;
let ticket = 0;        // bumped whenever an answer on its way becomes stale

function setState(state, message) {
  document.body.dataset.state = state;
  if (message !== undefined) $("status").textContent = message;
}

// --- drawing ----------------------------------------------------------------------------------

function context(canvas) {
  const ctx = canvas.getContext("2d");
  const k = canvas.width / span;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.setTransform(k, 0, 0, k, 0, 0);
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.lineWidth = span / 110;
  return ctx;
}

function drawLines(ctx, lines, color) {
  ctx.strokeStyle = ctx.fillStyle = color;
  for (const line of lines) {
    ctx.beginPath();
    if (line.length === 1) {  // a tap: a dot
      ctx.arc(line[0][0], line[0][1], ctx.lineWidth / 2, 0, 2 * Math.PI);
      ctx.fill();
      continue;
    }
    ctx.moveTo(line[0][0], line[0][1]);
    for (const [x, y] of line.slice(1)) ctx.lineTo(x, y);
    ctx.stroke();
  }
}

// Stroke-3 rows [dx, dy, pen] -> polylines of absolute points, starting at `origin` (and from
// it, if the pen is down there).
function polylines(rows, origin, penDown = false) {
  const lines = [];
  let [x, y] = origin, line = penDown ? [origin] : [];
  for (const [dx, dy, pen] of rows) {
    x += dx;
    y += dy;
    line.push([x, y]);
    if (pen === 1) { lines.push(line); line = []; }
  }
  if (line.length) lines.push(line);
  return lines;
}

function drawInk() { drawLines(context(ink), strokes, INK); }

function drawMachine() {
  const ctx = context(machine);
  if (shown) drawLines(ctx, polylines(shown.rows.slice(0, shown.upto), shown.origin, shown.penDown), MACHINE);
}

function resize() {
  const size = Math.round(board.clientWidth * (window.devicePixelRatio || 1));
  for (const canvas of [ink, machine]) canvas.width = canvas.height = size;
  drawInk();
  drawMachine();
}

// Draw `rows` from `origin` on the machine layer, a few points a frame; resolves when done.
function animate(rows, origin, penDown) {
  shown = {rows, origin, penDown, upto: 0};
  const mine = shown, step = Math.max(1, Math.ceil(rows.length / 60));
  return new Promise((resolve) => {
    function frame() {
      if (shown !== mine) return resolve(false);
      shown.upto = Math.min(rows.length, shown.upto + step);
      drawMachine();
      if (shown.upto < rows.length) requestAnimationFrame(frame); else resolve(true);
    }
    requestAnimationFrame(frame);
  });
}

// --- strokes for the API ----------------------------------------------------------------------

function distanceToSegment(p, a, b) {
  const [dx, dy] = [b[0] - a[0], b[1] - a[1]];
  const length2 = dx * dx + dy * dy;
  const t = length2 ? Math.max(0, Math.min(1, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / length2)) : 0;
  return Math.hypot(p[0] - a[0] - t * dx, p[1] - a[1] - t * dy);
}

// Ramer-Douglas-Peucker: the points of `line` that keep it within `epsilon`.
function simplify(line, epsilon) {
  if (line.length < 3) return line;
  let worst = 0, at = 0;
  for (let i = 1; i < line.length - 1; i++) {
    const d = distanceToSegment(line[i], line[0], line[line.length - 1]);
    if (d > worst) { worst = d; at = i; }
  }
  if (worst <= epsilon) return [line[0], line[line.length - 1]];
  return simplify(line.slice(0, at + 1), epsilon).slice(0, -1).concat(simplify(line.slice(at), epsilon));
}

const count = (lines) => lines.reduce((n, line) => n + line.length, 0);
const round = (v) => Math.round(v * 100) / 100;

// A drawing as stroke-3 of at most `budget` points: simplified further until it fits, then (if
// it still does not) its latest strokes; the pen lifted after each stroke, but for the last one
// if `penDown`. Returns {rows, origin, end, simplified}: `end` is its last point.
function toStroke3(lines, budget, penDown = false) {
  let epsilon = span / 500, simple = lines.map((line) => simplify(line, epsilon));
  while (count(simple) > budget && epsilon < span) {
    epsilon *= 2;
    simple = lines.map((line) => simplify(line, epsilon));
  }
  while (count(simple) > budget && simple.length > 1) simple = simple.slice(1);
  if (count(simple) > budget) simple = [simple[0].slice(-budget)];
  const origin = simple[0][0], rows = [];
  let previous = origin;
  for (const line of simple) {
    line.forEach((point, i) => {
      rows.push([round(point[0] - previous[0]), round(point[1] - previous[1]), i === line.length - 1 ? 1 : 0]);
      previous = point;
    });
  }
  if (penDown) rows[rows.length - 1][2] = 0;
  return {rows, origin, end: previous, simplified: count(simple) < count(lines)};
}

function centred(rows, box) {
  const points = polylines(rows, [0, 0]).flat();
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  return [box / 2 - (Math.min(...xs) + Math.max(...xs)) / 2, box / 2 - (Math.min(...ys) + Math.max(...ys)) / 2];
}

// --- the API ----------------------------------------------------------------------------------

async function ask(path, body) {
  const answer = await fetch(path, {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  const json = await answer.json();
  if (!answer.ok) throw new Error(json.error || answer.statusText);
  return json;
}

const temperature = () => Number($("temperature").value);

function updateButtons() {
  $("reroll").disabled = last === null;
  $("reconstruct").disabled = !strokes.length;
  $("interpolate").disabled = candidates().length < 2;
}

function candidates() { return strokes.length ? drawings.concat([strokes]) : drawings; }

// Complete, reconstruct or sample, and animate the answer. A drawing is completed from its first
// third of max_seq_len points at most, its last stroke sent with the pen still down: the model
// goes on from where the pen is (after a lifted pen, a model trained on one-stroke sketches ends).
async function run(kind) {
  const mine = ++ticket;
  last = kind;
  shown = null;
  drawMachine();
  updateButtons();
  const body = {temperature: temperature(), seed};
  let prefix = null;
  if (kind !== "sample") {
    const complete = kind === "complete";
    prefix = toStroke3(strokes, complete ? Math.max(1, Math.floor(info.max_seq_len / 3)) : info.max_seq_len, complete);
    body.strokes = prefix.rows;
  }
  setState("waiting", "The model is drawing\u2026");
  try {
    const answer = await ask(`/api/${kind}`, body);
    if (mine !== ticket) return;
    const rows = kind === "complete" ? answer.strokes.slice(prefix.rows.length) : answer.strokes;
    const origin = kind === "complete" ? prefix.end : kind === "reconstruct" ? prefix.origin : centred(rows, span);
    setState("animating");
    if (!(await animate(rows, origin, kind === "complete"))) return;
    const cut = prefix && prefix.simplified ? ` (your drawing was sent as ${prefix.rows.length} points)` : "";
    setState("done", `${kind === "complete" ? "Completed" : kind === "sample" ? "Drawn" : "Reconstructed"}: ` +
      `${rows.length} points by the model, seed ${seed}${cut}. Re-roll for another.`);
  } catch (error) {
    if (mine === ticket) setState("error", `The model could not answer: ${error.message}`);
  }
}

async function interpolate() {
  const mine = ++ticket;
  const [first, second] = candidates().slice(-2).map((lines) => toStroke3(lines, info.max_seq_len).rows);
  setState("waiting", "Interpolating\u2026");
  try {
    const answer = await ask("/api/interpolate", {first, second, steps: 6, temperature: temperature(), seed});
    if (mine !== ticket) return;
    const strip = $("strip");
    strip.replaceChildren();
    for (const rows of [first, ...answer.sketches, second]) {
      const canvas = document.createElement("canvas");
      strip.append(canvas);
      canvas.width = canvas.height = Math.round(canvas.clientWidth * (window.devicePixelRatio || 1));
      const ctx = context(canvas);
      drawLines(ctx, polylines(rows, centred(rows, span)), rows === first || rows === second ? INK : MACHINE);
    }
    setState("done", `Interpolated between your last two drawings: ${answer.sketches.length} sketches.`);
  } catch (error) {
    if (mine === ticket) setState("error", `The model could not answer: ${error.message}`);
  }
}

// --- input ------------------------------------------------------------------------------------

function point(event) {
  const rect = board.getBoundingClientRect();
  return [(event.clientX - rect.left) / rect.width * span, (event.clientY - rect.top) / rect.height * span];
}

board.addEventListener("pointerdown", (event) => {
  if (!info || event.button !== 0) return;
  event.preventDefault();
  board.setPointerCapture(event.pointerId);
  ticket++;  // what the model was drawing is dropped
  shown = null;
  drawMachine();
  current = [point(event)];
  strokes.push(current);
  setState("drawing", "");
  drawInk();
});

board.addEventListener("pointermove", (event) => {
  if (!current) return;
  const p = point(event), q = current[current.length - 1];
  if (Math.hypot(p[0] - q[0], p[1] - q[1]) < span / 150) return;
  current.push(p);
  drawInk();
});

function endStroke() {
  if (!current) return;
  current = null;
  run("complete");
}
board.addEventListener("pointerup", endStroke);
board.addEventListener("pointercancel", endStroke);

function clear() {
  if (strokes.length) drawings = drawings.concat([strokes]).slice(-10);
  ticket++;
  strokes = [];
  shown = null;
  last = null;
  drawInk();
  drawMachine();
  updateButtons();
  setState("ready", "Draw something: the model finishes it.");
}

$("clear").addEventListener("click", clear);
$("scratch").addEventListener("click", () => { clear(); run("sample"); });
$("reroll").addEventListener("click", () => { seed += 1; run(last); });
$("reconstruct").addEventListener("click", () => run("reconstruct"));
$("interpolate").addEventListener("click", interpolate);
$("temperature").addEventListener("input", () => { $("temperature-value").textContent = temperature().toFixed(2); });
$("temperature").addEventListener("change", () => { if (last) run(last); });
window.addEventListener("resize", resize);

fetch("/api/info").then((answer) => answer.json()).then((json) => {
  info = json;
  span = VIEW * info.extent;
  document.body.classList.toggle("unconditional", !info.conditional);
  $("model").textContent = `The ${info.preset} model (${info.conditional ? "conditional" : "unconditional"}, ` +
    `at most ${info.max_seq_len} points), trained on: ${info.classes.join(", ")}.`;
  resize();
  setState("ready");
}).catch((error) => setState("error", `Cannot reach the model: ${error.message}`));
