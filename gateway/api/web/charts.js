// Small inline-SVG charts with time on x: a shaded band (step per minute), step lines
// (per market slot), a "now" marker, axes with gridlines. No chart library.
//
// A chart is drawn at the pixel width of its host element, so text stays readable on a
// phone; a ChartHost redraws on resize and only when its data changed (no flicker).

const NS = "http://www.w3.org/2000/svg";

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// ---- scales and ticks -------------------------------------------------------------

function linear(d0, d1, r0, r1) {
  const span = d1 - d0 || 1;
  return (value) => r0 + ((value - d0) / span) * (r1 - r0);
}

export function niceStep(span, count) {
  const raw = Math.max(span, 1e-9) / Math.max(count, 1);
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const factor of [1, 2, 2.5, 5, 10]) {
    if (factor * power >= raw) return factor * power;
  }
  return 10 * power;
}

export function niceDomain(lo, hi, count = 4) {
  if (!(hi > lo)) {
    const pad = Math.abs(lo) > 0 ? Math.abs(lo) * 0.5 : 1;
    lo -= pad;
    hi += pad;
  }
  const step = niceStep(hi - lo, count);
  return { lo: Math.floor(lo / step) * step, hi: Math.ceil(hi / step) * step, step };
}

const TIME_STEPS = [60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

function timeTicks(t0, t1, maxTicks) {
  const step = TIME_STEPS.find((s) => (t1 - t0) / s <= maxTicks) ?? 86400;
  const offset = new Date(t0 * 1000).getTimezoneOffset() * 60; // local time alignment
  let first = Math.ceil((t0 - offset) / step) * step + offset;
  const ticks = [];
  for (let t = first; t <= t1; t += step) ticks.push(t);
  return ticks;
}

export function clockTime(unix) {
  return new Date(unix * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
}

function numberLabel(value, step) {
  let digits = 0;
  while (digits < 3 && Math.abs(Math.round(step * 10 ** digits) - step * 10 ** digits) > 1e-9) digits += 1;
  return (Math.abs(value) < 1e-9 ? 0 : value).toFixed(digits);
}

// ---- geometry helpers --------------------------------------------------------------

// Consecutive minute points with the same band merged into runs {t0, t1, lo, hi};
// a gap (a minute without a band) starts a new piece.
export function bandRuns(points, stepSeconds = 60) {
  const sorted = [...points].sort((a, b) => a.t - b.t);
  const pieces = [];
  let piece = null;
  for (const p of sorted) {
    const last = piece && piece[piece.length - 1];
    if (last && last.t1 === p.t && last.lo === p.lo && last.hi === p.hi) {
      last.t1 = p.t + stepSeconds;
    } else if (last && last.t1 === p.t) {
      piece.push({ t0: p.t, t1: p.t + stepSeconds, lo: p.lo, hi: p.hi });
    } else {
      piece = [{ t0: p.t, t1: p.t + stepSeconds, lo: p.lo, hi: p.hi }];
      pieces.push(piece);
    }
  }
  return pieces;
}

function bandPath(pieces, x, y, clip0, clip1) {
  let d = "";
  for (const piece of pieces) {
    const runs = piece
      .map((r) => ({ ...r, t0: Math.max(r.t0, clip0), t1: Math.min(r.t1, clip1) }))
      .filter((r) => r.t1 > r.t0);
    if (!runs.length) continue;
    const top = runs.flatMap((r) => [`${x(r.t0).toFixed(1)},${y(r.hi).toFixed(1)}`, `${x(r.t1).toFixed(1)},${y(r.hi).toFixed(1)}`]);
    const bottom = [...runs]
      .reverse()
      .flatMap((r) => [`${x(r.t1).toFixed(1)},${y(r.lo).toFixed(1)}`, `${x(r.t0).toFixed(1)},${y(r.lo).toFixed(1)}`]);
    d += `M${top.join("L")}L${bottom.join("L")}Z`;
  }
  return d;
}

function edgePath(pieces, key, x, y, clip0, clip1) {
  let d = "";
  for (const piece of pieces) {
    const runs = piece
      .map((r) => ({ ...r, t0: Math.max(r.t0, clip0), t1: Math.min(r.t1, clip1) }))
      .filter((r) => r.t1 > r.t0);
    if (!runs.length) continue;
    d += "M" + runs.map((r) => `${x(r.t0).toFixed(1)},${y(r[key]).toFixed(1)}L${x(r.t1).toFixed(1)},${y(r[key]).toFixed(1)}`).join("L");
  }
  return d;
}

function stepPath(segments, x, y, clip0, clip1) {
  const sorted = [...segments]
    .map((s) => ({ ...s, t0: Math.max(s.t0, clip0), t1: Math.min(s.t1, clip1) }))
    .filter((s) => s.t1 > s.t0)
    .sort((a, b) => a.t0 - b.t0);
  let d = "";
  let previous = null;
  for (const s of sorted) {
    const left = `${x(s.t0).toFixed(1)},${y(s.y).toFixed(1)}`;
    const right = `${x(s.t1).toFixed(1)},${y(s.y).toFixed(1)}`;
    d += previous && previous.t1 === s.t0 ? `L${left}L${right}` : `M${left}L${right}`;
    previous = s;
  }
  return d;
}

// ---- the chart ------------------------------------------------------------------------

/**
 * A time chart as an <svg role="img">.
 * options: width, height, t0, t1 (Unix s), label (accessible name), yUnit, highlights: [{t0,t1}],
 *   bands: [{points:[{t,lo,hi}], className}], steps: [{segments:[{t0,t1,y}], className}],
 *   now (Unix s), compact (fewer ticks), yExtra (values that must be visible, e.g. 0)
 */
export function timeChart(options) {
  const {
    width, height = 200, t0, t1, label, yUnit = "kW", bands = [], steps = [], now = null,
    compact = false, yExtra = [0], title = null, highlights = [],
  } = options;
  const margin = { top: title ? 36 : 26, right: 10, bottom: 22, left: compact ? 34 : 42 };
  const plotW = Math.max(40, width - margin.left - margin.right);
  const plotH = Math.max(30, height - margin.top - margin.bottom);

  const values = [...yExtra];
  for (const band of bands) for (const p of band.points) if (p.t + 60 > t0 && p.t < t1) values.push(p.lo, p.hi);
  for (const step of steps) for (const s of step.segments) if (s.t1 > t0 && s.t0 < t1) values.push(s.y);
  const dom = niceDomain(Math.min(...values), Math.max(...values), compact ? 3 : 4);
  const x = linear(t0, t1, margin.left, margin.left + plotW);
  const y = linear(dom.lo, dom.hi, margin.top + plotH, margin.top);

  const root = svg("svg", {
    width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "chart",
  });
  root.append(svg("title", {}, label));
  if (title) root.append(svg("text", { x: 2, y: 13, class: "chart-title" }, title));

  const grid = svg("g", { class: "grid", "aria-hidden": "true" });
  for (let v = dom.lo; v <= dom.hi + dom.step / 2; v += dom.step) {
    const py = y(v).toFixed(1);
    grid.append(svg("line", { x1: margin.left, x2: margin.left + plotW, y1: py, y2: py, class: Math.abs(v) < 1e-9 ? "zero" : null }));
    grid.append(svg("text", { x: margin.left - 5, y: py, dy: "0.32em", "text-anchor": "end" }, numberLabel(v, dom.step)));
  }
  const maxTicks = Math.max(2, Math.floor(plotW / (compact ? 60 : 70)));
  for (const t of timeTicks(t0, t1, maxTicks)) {
    const px = x(t).toFixed(1);
    grid.append(svg("line", { x1: px, x2: px, y1: margin.top, y2: margin.top + plotH, class: "vertical" }));
    grid.append(svg("text", { x: px, y: margin.top + plotH + 15, "text-anchor": "middle" }, clockTime(t)));
  }
  grid.append(svg("text", { x: 4, y: margin.top - 12, class: "unit" }, yUnit));
  root.append(grid);

  const clipId = `clip${Math.random().toString(36).slice(2, 9)}`;
  root.append(svg("clipPath", { id: clipId }, svg("rect", { x: margin.left, y: margin.top - 2, width: plotW, height: plotH + 4 })));
  const plot = svg("g", { "clip-path": `url(#${clipId})` });
  for (const band of bands) {
    const pieces = bandRuns(band.points);
    plot.append(svg("path", { d: bandPath(pieces, x, y, t0, t1), class: `band ${band.className ?? ""}` }));
    plot.append(svg("path", { d: edgePath(pieces, "hi", x, y, t0, t1), class: `band-edge ${band.className ?? ""}` }));
    plot.append(svg("path", { d: edgePath(pieces, "lo", x, y, t0, t1), class: `band-edge ${band.className ?? ""}` }));
  }
  for (const span of highlights) {
    const a = x(Math.max(span.t0, t0));
    const b = x(Math.min(span.t1, t1));
    if (b > a) plot.append(svg("rect", { x: a.toFixed(1), y: margin.top, width: (b - a).toFixed(1), height: plotH, class: "highlight" }));
  }
  for (const step of steps) {
    plot.append(svg("path", { d: stepPath(step.segments, x, y, t0, t1), class: `step ${step.className ?? ""}` }));
  }
  root.append(plot);

  if (now !== null && now >= t0 && now <= t1) {
    const px = x(now).toFixed(1);
    root.append(
      svg("g", { class: "now", "aria-hidden": "true" },
        svg("line", { x1: px, x2: px, y1: margin.top - 2, y2: margin.top + plotH }),
        svg("text", { x: px, y: margin.top - 4, "text-anchor": x(now) > width - 30 ? "end" : "middle" }, "now")),
    );
  }
  root.append(svg("rect", { x: margin.left, y: margin.top, width: plotW, height: plotH, class: "frame", "aria-hidden": "true" }));
  return root;
}

/** Holds one chart in an element; redraws on resize and when the data changed. */
export class ChartHost {
  constructor(element, draw) {
    this.element = element;
    this.draw = draw; // (data, width) => svg element
    this.data = undefined;
    this.key = "";
    this.width = 0;
    new ResizeObserver(() => {
      const width = Math.floor(this.element.clientWidth);
      if (width && width !== this.width && this.data !== undefined) this.render(true);
    }).observe(element);
  }

  update(data, key = JSON.stringify(data)) {
    if (key === this.key) return;
    this.key = key;
    this.data = data;
    this.render(true);
  }

  render() {
    const width = Math.floor(this.element.clientWidth) || 320;
    this.width = width;
    this.element.replaceChildren(this.draw(this.data, width));
  }
}
