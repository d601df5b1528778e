// The DSO page: sign in (wallet or a key kept in this tab), the OCM oracle's last cycle, the
// feeder drawn with bus voltages and branch loadings, the bands of every flexibility over a
// day as small multiples, limitations and violations; refreshed every few seconds.

import {
  $, Api, ApiError, Session, clock, dl, every, h, num, plainError, renderIfChanged, shortAddress, table,
  wireSignIn,
} from "/static/common.js";
import { ChartHost, svg, timeChart } from "/static/charts.js";

const REFRESH_MS = 5000;
const BANDS_EVERY = 4; // refreshes (the bands change once a minute)
const DAY = 86400;

const api = new Api();
const state = {
  slotSeconds: 900,
  offset: 0,
  feeder: null,
  ocm: undefined, // undefined: not loaded; null: no cycle yet
  day: null, // local midnight (Unix s) of the day shown
  bandCharts: new Map(),
  feederChart: null,
  loop: null,
  ticks: 0,
};

const now = () => Date.now() / 1000 + state.offset;

function localMidnight(t) {
  const date = new Date(t * 1000);
  date.setHours(0, 0, 0, 0);
  return Math.floor(date.getTime() / 1000);
}

// ---- colours -------------------------------------------------------------------------

const VOLTAGE = [
  { key: "below", label: "below its limit", color: "#3b4cc0" },
  { key: "low", label: "near the lower limit", color: "#8fb8f0" },
  { key: "ok", label: "within limits", color: "#2e9d5b" },
  { key: "high", label: "near the upper limit", color: "#f2a541" },
  { key: "above", label: "above its limit", color: "#d7301f" },
  { key: "none", label: "no OCM data", color: "#b8c0c8" },
];
const LOADING = [
  { key: "light", label: "below 60 %", color: "#2e9d5b" },
  { key: "medium", label: "60–90 %", color: "#e2b714" },
  { key: "near", label: "90–100 %", color: "#f28c28" },
  { key: "over", label: "overloaded", color: "#d7301f" },
  { key: "none", label: "no OCM data", color: "#b8c0c8" },
];
const colorOf = (scale, key) => scale.find((c) => c.key === key).color;

/** The bus's worst voltage (furthest from the middle of its limits) and its category. */
function busVoltage(bus) {
  if (!bus) return { key: "none" };
  const lo = bus.min_vm_pu ?? 0.95;
  const hi = bus.max_vm_pu ?? 1.05;
  const values = [bus.vm_pu, bus.vm_pu_at_pmin, bus.vm_pu_at_pmax].filter((v) => typeof v === "number");
  if (!values.length) return { key: "none" };
  const position = (v) => (v - lo) / (hi - lo || 1);
  const worst = values.reduce((a, b) => (Math.abs(position(b) - 0.5) > Math.abs(position(a) - 0.5) ? b : a));
  const u = position(worst);
  const key = u < 0 ? "below" : u < 0.1 ? "low" : u > 1 ? "above" : u > 0.9 ? "high" : "ok";
  return { key, worst, lo, hi };
}

/** The branch's worst loading (now, or at either corner of the bands) against its limit. */
function worstLoading(branch) {
  const values = [branch?.loading_percent, branch?.loading_percent_at_corners].filter((v) => typeof v === "number");
  return values.length ? Math.max(...values) : undefined;
}

function branchLoading(branch) {
  const percent = worstLoading(branch);
  if (percent === undefined) return { key: "none" };
  const limit = branch.limit_percent || 100;
  const r = percent / limit;
  const key = r > 1 ? "over" : r > 0.9 ? "near" : r > 0.6 ? "medium" : "light";
  return { key, percent, limit };
}

/** "bus:5", "line:3": the drawing's id of the element a binding constraint names. */
function bindingId(item) {
  if (!item || typeof item !== "object") return null;
  if (item.element !== undefined && item.index !== undefined) return `${item.element}:${item.index}`;
  if (item.bus !== undefined) return `bus:${item.bus}`;
  return item.kind !== undefined && item.index !== undefined ? `${item.kind}:${item.index}` : null;
}

function legend(element, scale, extra = []) {
  element.replaceChildren(...scale.map((c) =>
    h("li", {}, h("span", { className: element.id === "voltage-legend" ? "swatch dot" : "swatch bar", style: `background:${c.color}` }), c.label)), ...extra);
}

// ---- sign-in state -------------------------------------------------------------------

const session = new Session(api, "dso", showSession);

function showSession() {
  const signedIn = session.signedIn;
  $("#sign-in").hidden = signedIn;
  $("#app").hidden = !signedIn;
  $("#who").hidden = !signedIn;
  if (!signedIn) return;
  $("#who-address").textContent = `DSO ${shortAddress(session.address)}`;
  $("#who-address").title = session.address;
  if (!state.loop) state.loop = every(REFRESH_MS, refresh);
  else state.loop.now();
}

$("#sign-out").addEventListener("click", () => session.signOut());

// ---- loads ---------------------------------------------------------------------------------

async function refresh() {
  if (!state.feeder) await loadFeeder().catch(() => null); // the bands' titles name kind and bus
  const loads = [
    loadOcm(),
    api.get("/v1/dso/limitations?limit=200", { auth: true }).then(renderLimitations),
    api.get("/v1/dso/violations?limit=200", { auth: true }).then(renderViolations),
  ];
  if (state.ticks % 12 === 11) loads.push(loadFeeder());
  if (state.ticks % BANDS_EVERY === 0) loads.push(loadBands());
  state.ticks += 1;
  const results = await Promise.allSettled(loads);
  const failed = results.find((r) => r.status === "rejected");
  if (failed && failed.reason instanceof ApiError && failed.reason.status === 403) {
    $("#not-dso").hidden = false;
    $("#not-dso").textContent = `${session.address} does not hold the DSO role (${plainError(failed.reason)}). Sign out and use the DSO's key.`;
  }
  const live = $("#live");
  live.dataset.state = failed ? "stale" : "live";
  live.textContent = failed ? "offline" : `live · ${clock(now())}`;
  live.title = failed ? plainError(failed.reason) : "refreshed every few seconds";
  drawFeeder();
}

async function loadFeeder() {
  try {
    state.feeder = await api.get("/v1/feeder");
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      state.feeder = { name: "", buses: [], branches: [], meters: [], flexibilities: [], missing: plainError(error) };
      return;
    }
    throw error;
  }
  $("#feeder-name").textContent = state.feeder.name;
}

async function loadOcm() {
  try {
    state.ocm = await api.get("/v1/dso/ocm", { auth: true });
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) state.ocm = null;
    else throw error;
  }
  renderOcm();
}

async function loadBands() {
  if (state.day === null) state.day = localMidnight(now());
  const from = state.day;
  const to = state.day + DAY;
  const answer = await api.get(`/v1/dso/bands?from_time=${from}&to_time=${to}`, { auth: true });
  renderBands(answer, from, to);
}

// ---- OCM status ----------------------------------------------------------------------------

const CONSTRAINTS = { voltage_min: "lower voltage limit", voltage_max: "upper voltage limit", loading: "loading limit" };
const CORNERS = { pmax: "every flexibility at P max", pmin: "every flexibility at P min" };

function describe(item) {
  if (item === null || typeof item !== "object") return String(item);
  if (item.element !== undefined && item.kind in CONSTRAINTS) {
    const where = state.names?.get(`${item.element}:${item.index}`) ?? `${item.element} ${item.index}`;
    const unit = item.kind === "loading" ? " %" : " pu";
    const digits = item.kind === "loading" ? 1 : 4;
    return `${where}: ${CONSTRAINTS[item.kind]} ${num(item.value, digits)}${unit} (limit ${num(item.limit, digits)}${unit})` +
      (item.corner in CORNERS ? ` with ${CORNERS[item.corner]}` : "");
  }
  if (item.constraint !== undefined && item.value !== undefined) {
    const where = item.name ?? (item.bus !== undefined ? `bus ${item.bus}` : `${item.kind} ${item.index}`);
    const limit = item.limit !== undefined ? ` (limit ${typeof item.limit === "number" ? num(item.limit, 4) : item.limit})` : "";
    return `${where}: ${String(item.constraint).replace(/_/g, " ")} ${typeof item.value === "number" ? num(item.value, 4) : item.value}${limit}`;
  }
  const name = item.name ?? (item.kind !== undefined && item.index !== undefined ? `${item.kind} ${item.index}` : null)
    ?? (item.bus !== undefined ? `bus ${item.bus}` : null) ?? item.flex_id ?? null;
  const skip = new Set(["name", "kind", "index", "bus", "flex_id"]);
  const rest = Object.entries(item).filter(([k]) => !skip.has(k)).map(([k, v]) => `${k.replace(/_/g, " ")} ${typeof v === "number" ? num(v, 4) : v}`);
  return [name, rest.join(", ")].filter(Boolean).join(": ");
}

function yesNo(value, good = true) {
  if (value === undefined || value === null) return h("span", { className: "badge" }, "–");
  return h("span", { className: `badge ${Boolean(value) === good ? "ok" : "bad"}` }, value ? "yes" : "no");
}

function renderOcm() {
  const status = state.ocm;
  $("#ocm-when").textContent = status?.minute ? `cycle of ${clock(status.minute * 60, true)}` : "";
  renderIfChanged($("#ocm"), status ?? "none", () => {
    if (!status) {
      return h("p", { className: "banner" }, "No OCM cycle yet: the oracle has not reported. The feeder is drawn without voltages and loadings.");
    }
    const v = status.verification;
    const parts = [
      dl([
        ["Feasible", yesNo(status.feasible)],
        ["Bands published", yesNo(status.published)],
        ["Binding constraints", String((status.binding ?? []).length)],
      ]),
      status.reason ? h("p", { className: "note", style: "margin-top:8px" }, `Reason: ${status.reason}`) : null,
      h("h3", {}, "Binding constraints"),
      (status.binding ?? []).length
        ? h("ul", { className: "plain" }, status.binding.map((b) => h("li", {}, describe(b))))
        : h("p", { className: "empty" }, "None: the bands are limited by the flexibilities' own bounds."),
    ];
    if (v && typeof v === "object") {
      const range = typeof v.v_min_pu === "number" ? `voltages ${num(v.v_min_pu, 4)}…${num(v.v_max_pu, 4)} pu` : null;
      const loading = typeof v.max_loading_percent === "number" ? `max loading ${num(v.max_loading_percent, 1)} %` : null;
      const count = typeof v.schedules === "number" ? v.schedules : typeof v.corners === "number" ? v.corners + (v.samples ?? 0) : null;
      const checked = count !== null ? `${count} schedules checked${v.failures ? `, ${v.failures} failed` : ""}` : null;
      parts.push(
        h("h3", {}, "Verification ", "passed" in v ? yesNo(v.passed) : null),
        h("p", { className: "note" }, [checked, range, loading].filter(Boolean).join(" · ") || describe(v)),
        (v.summary || v.message) ? h("p", { className: "note" }, v.summary || v.message) : null,
      );
    }
    if (Array.isArray(status.flexibilities) && status.flexibilities.length && typeof status.flexibilities[0] === "object") {
      parts.push(h("h3", {}, "Bands published this cycle"), table({
        caption: "Bands published by the last OCM cycle",
        rows: status.flexibilities,
        columns: [
          { label: "Flexibility", value: (f) => f.flex_id ?? describe(f) },
          { label: "P min kW", value: (f) => num(f.p_min_kw), num: true },
          { label: "P max kW", value: (f) => num(f.p_max_kw), num: true },
        ],
      }));
    }
    return parts;
  });
}

// ---- the feeder drawing ----------------------------------------------------------------------

function drawFeeder() {
  if (!state.feeder) return;
  const host = $("#feeder");
  if (state.feeder.missing) {
    renderIfChanged(host, "missing", () => h("p", { className: "empty" }, state.feeder.missing));
    return;
  }
  if (!state.feederChart) {
    host.replaceChildren();
    state.feederChart = new ChartHost(host, feederSvg);
  }
  state.feederChart.update({ feeder: state.feeder, ocm: state.ocm ?? null });
  renderFeederTable();
}

function feederSvg({ feeder, ocm }, width) {
  const buses = feeder.buses;
  const busStatus = new Map((ocm?.buses ?? []).map((b) => [b.bus, b]));
  const branchStatus = new Map((ocm?.branches ?? []).map((b) => [`${b.kind}:${b.index}`, b]));
  const binding = new Set();
  for (const item of ocm?.binding ?? []) {
    const id = bindingId(item);
    if (id) binding.add(id);
  }
  const flexAt = new Map();
  for (const f of feeder.flexibilities) flexAt.set(f.bus, [...(flexAt.get(f.bus) ?? []), f]);
  const metersAt = new Map();
  for (const m of feeder.meters) metersAt.set(m.bus, [...(metersAt.get(m.bus) ?? []), m.meter_id]);
  const maxFlex = Math.max(0, ...[...flexAt.values()].map((list) => list.length));

  const xs = buses.map((b) => b.x);
  const ys = buses.map((b) => b.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const pad = { left: 30, right: 30, top: 26, bottom: 30 + 18 * maxFlex };
  const plotW = width - pad.left - pad.right;
  let scale = (x1 - x0) > 0 ? plotW / (x1 - x0) : 1;
  let plotH = (y1 - y0) * scale;
  if (plotH > 520) {
    scale = 520 / (y1 - y0);
    plotH = 520;
  }
  const height = Math.max(110, plotH + pad.top + pad.bottom);
  const offsetX = (x1 - x0) > 0 ? pad.left + (plotW - (x1 - x0) * scale) / 2 : width / 2;
  const inner = height - pad.top - pad.bottom;
  const offsetY = pad.top + (inner - plotH) / 2;
  const px = (b) => ((x1 - x0) > 0 ? offsetX + (b.x - x0) * scale : offsetX);
  const py = (b) => ((y1 - y0) > 0 ? offsetY + (y1 - b.y) * scale : pad.top + inner / 2); // y up, as on a map
  const spacing = buses.length > 1 ? Math.min(...buses.flatMap((a, i) => buses.slice(i + 1).map((b) => Math.hypot(px(a) - px(b), py(a) - py(b))))) : width;
  const showLabels = buses.length <= 40 && spacing >= 34;
  const byBus = new Map(buses.map((b) => [b.bus, b]));

  const worstV = [...busStatus.values()].map((b) => [b.bus, busVoltage(b)]).filter(([, v]) => v.worst !== undefined)
    .sort((a, b) => a[1].worst - b[1].worst);
  const worstL = [...branchStatus.values()].filter((b) => worstLoading(b) !== undefined)
    .sort((a, b) => worstLoading(b) - worstLoading(a))[0];
  const names = new Map(feeder.branches.map((b) => [`${b.kind}:${b.index}`, b.name]));
  state.names = new Map([...names, ...buses.map((b) => [`bus:${b.bus}`, b.name])]);
  const summary = [
    `Feeder ${feeder.name}: ${buses.length} buses, ${feeder.branches.length} lines and transformers`,
    worstV.length ? `lowest voltage ${num(worstV[0][1].worst, 4)} pu at ${byBus.get(worstV[0][0])?.name ?? worstV[0][0]}` : "no OCM voltages yet",
    worstL ? `highest loading ${num(worstLoading(worstL), 1)} % on ${names.get(`${worstL.kind}:${worstL.index}`) ?? worstL.index}` : null,
  ].filter(Boolean).join("; ");

  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": summary, class: "feeder" });
  root.append(svg("title", {}, summary));
  const halo = svg("g", { "aria-hidden": "true" });
  const lines = svg("g", {});
  for (const branch of feeder.branches) {
    const a = byBus.get(branch.from_bus);
    const b = byBus.get(branch.to_bus);
    if (!a || !b) continue;
    const id = `${branch.kind}:${branch.index}`;
    const loading = branchLoading(branchStatus.get(id));
    const coords = { x1: px(a).toFixed(1), y1: py(a).toFixed(1), x2: px(b).toFixed(1), y2: py(b).toFixed(1) };
    if (binding.has(id)) halo.append(svg("line", { ...coords, stroke: "#d7301f", "stroke-opacity": 0.22, "stroke-width": 14, "stroke-linecap": "round" }));
    const text = `${branch.name || id} (${branch.kind}): ${loading.percent !== undefined ? `${num(loading.percent, 1)} % of ${num(loading.limit, 0)} %` : "no loading yet"}${binding.has(id) ? "; binding" : ""}`;
    const group = svg("g", { class: `branch ${branch.kind}${binding.has(id) ? " binding" : ""}`, "data-id": id },
      svg("title", {}, text),
      svg("line", { ...coords, stroke: colorOf(LOADING, loading.key), "stroke-width": 5, "stroke-linecap": "round" }));
    if (branch.kind === "trafo") {
      const mx = (px(a) + px(b)) / 2;
      const my = (py(a) + py(b)) / 2;
      const len = Math.hypot(px(b) - px(a), py(b) - py(a)) || 1;
      const dx = ((px(b) - px(a)) / len) * 4;
      const dy = ((py(b) - py(a)) / len) * 4;
      group.append(svg("g", { class: "trafo" },
        svg("circle", { cx: (mx - dx).toFixed(1), cy: (my - dy).toFixed(1), r: 6.5 }),
        svg("circle", { cx: (mx + dx).toFixed(1), cy: (my + dy).toFixed(1), r: 6.5 })));
    }
    lines.append(group);
  }
  root.append(halo, lines);

  const nodes = svg("g", {});
  for (const bus of buses) {
    const status = busStatus.get(bus.bus);
    const voltage = busVoltage(status);
    const x = px(bus);
    const y = py(bus);
    const flexes = flexAt.get(bus.bus) ?? [];
    const meters = metersAt.get(bus.bus) ?? [];
    const tip = [
      `${bus.name} (bus ${bus.bus}, ${num(bus.vn_kv, 2)} kV)`,
      status ? `voltage ${num(status.vm_pu, 4)} pu now, ${num(status.vm_pu_at_pmin, 4)} at P_min, ${num(status.vm_pu_at_pmax, 4)} at P_max (limits ${num(voltage.lo, 3)}…${num(voltage.hi, 3)})` : "no voltage yet",
      Array.isArray(status?.vm_phase_pu) ? `phases ${["L1", "L2", "L3"].map((name, k) => `${name} ${num(status.vm_phase_pu[k], 4)}`).join(", ")} pu, unbalance ${num(status.unbalance_percent, 2)} %` : null,
      meters.length ? `meters ${meters.join(", ")}` : null,
      flexes.length ? `flexibilities ${flexes.map((f) => f.flex_id).join(", ")}` : null,
    ].filter(Boolean).join("; ");
    const group = svg("g", { class: `bus${binding.has(`bus:${bus.bus}`) ? " binding" : ""}`, "data-bus": bus.bus },
      svg("title", {}, tip),
      svg("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: bus.vn_kv > 1 ? 9 : 7.5, fill: colorOf(VOLTAGE, voltage.key) }));
    if (showLabels) {
      group.append(svg("text", { x: x.toFixed(1), y: (y - 13).toFixed(1), "text-anchor": "middle" }, bus.name));
      if (voltage.worst !== undefined) {
        group.append(svg("text", { x: x.toFixed(1), y: (y + 21).toFixed(1), "text-anchor": "middle", class: "value" }, `${voltage.worst.toFixed(3)} pu`));
      }
    }
    flexes.forEach((flex, i) => {
      const ty = y + (showLabels ? 30 : 14) + i * 18;
      const w = flex.flex_id.length * 6.6 + 10;
      group.append(svg("g", { class: "flex" },
        svg("rect", { x: (x - w / 2).toFixed(1), y: ty.toFixed(1), width: w.toFixed(1), height: 15, rx: 4 }),
        svg("text", { x: x.toFixed(1), y: (ty + 11).toFixed(1), "text-anchor": "middle" }, flex.flex_id)));
    });
    nodes.append(group);
  }
  root.append(nodes);
  return root;
}

// three-phase OCM (docs/three-phase.md): each phase's voltage now and the voltage unbalance
const PHASE_COLUMNS = [
  ...["L1", "L2", "L3"].map((label, k) => ({ label, value: (s) => num(s?.vm_phase_pu?.[k], 4), num: true })),
  { label: "Unbal. %", value: (s) => num(s?.unbalance_percent, 2), num: true },
];

function renderFeederTable() {
  const { feeder, ocm } = { feeder: state.feeder, ocm: state.ocm };
  const busStatus = new Map((ocm?.buses ?? []).map((b) => [b.bus, b]));
  const branchStatus = new Map((ocm?.branches ?? []).map((b) => [`${b.kind}:${b.index}`, b]));
  const threePhase = (ocm?.buses ?? []).some((b) => Array.isArray(b.vm_phase_pu));
  renderIfChanged($("#feeder-table"), { feeder, ocm: ocm ? { b: ocm.buses, l: ocm.branches } : null }, () => [
    table({
      caption: "Bus voltages (pu)",
      rows: feeder.buses,
      columns: [
        { label: "Bus", value: (b) => b.name },
        { label: "Now", value: (b) => num(busStatus.get(b.bus)?.vm_pu, 4), num: true },
        { label: "At P min", value: (b) => num(busStatus.get(b.bus)?.vm_pu_at_pmin, 4), num: true },
        { label: "At P max", value: (b) => num(busStatus.get(b.bus)?.vm_pu_at_pmax, 4), num: true },
        ...(threePhase ? PHASE_COLUMNS.map((column) => ({ ...column, value: (b) => column.value(busStatus.get(b.bus)) })) : []),
      ],
    }),
    table({
      caption: "Branch loadings (%)",
      rows: feeder.branches,
      columns: [
        { label: "Branch", value: (b) => `${b.name || b.index} (${b.kind})` },
        { label: "Loading %", value: (b) => num(branchStatus.get(`${b.kind}:${b.index}`)?.loading_percent, 1), num: true },
        { label: "In band %", value: (b) => num(branchStatus.get(`${b.kind}:${b.index}`)?.loading_percent_at_corners, 1), num: true },
        { label: "Limit %", value: (b) => num(branchStatus.get(`${b.kind}:${b.index}`)?.limit_percent, 0), num: true },
      ],
    }),
  ]);
}

// ---- bands as small multiples ------------------------------------------------------------------

function renderBands(answer, from, to) {
  const container = $("#dso-bands");
  const day = new Date(from * 1000);
  $("#day-label").textContent = day.toLocaleDateString([], { weekday: "short", day: "numeric", month: "short" });
  if (!answer.flexibilities.length) {
    renderIfChanged(container, "none", () => h("p", { className: "empty" }, "No flexibilities registered."));
    state.bandCharts.clear();
    return;
  }
  const ids = answer.flexibilities.map((f) => f.flex_id);
  const layout = JSON.stringify(ids);
  if (container.dataset.key !== layout) {
    container.dataset.key = layout;
    state.bandCharts.clear();
    container.replaceChildren(...ids.map((id) => {
      const host = h("div", { className: "chart-host" });
      state.bandCharts.set(id, new ChartHost(host, drawSmallBand));
      return h("figure", { className: "chart-box", style: "margin:4px 0 8px" }, host);
    }));
  }
  const kinds = new Map((state.feeder?.flexibilities ?? []).map((f) => [f.flex_id, f]));
  const t = now();
  for (const flex of answer.flexibilities) {
    const meta = kinds.get(flex.flex_id);
    const current = flex.points.find((p) => p.time <= t && t < p.time + 60);
    state.bandCharts.get(flex.flex_id)?.update({
      id: flex.flex_id,
      title: [flex.flex_id, meta ? `${meta.kind.replace("_", " ")} · bus ${meta.bus}` : null,
        current ? `now ${num(current.p_min_kw)}…${num(current.p_max_kw)} kW` : null].filter(Boolean).join(" · "),
      from, to,
      now: Math.floor(t / 60) * 60,
      points: flex.points.map((p) => ({ t: p.time, lo: p.p_min_kw, hi: p.p_max_kw })),
    });
  }
}

function drawSmallBand(data, width) {
  return timeChart({
    width,
    height: 150,
    t0: data.from,
    t1: data.to,
    compact: true,
    title: data.title,
    label: `Band of ${data.id} on ${new Date(data.from * 1000).toDateString()}, kW (${data.points.length} minutes published)`,
    bands: [{ points: data.points }],
    now: data.now,
  });
}

function moveDay(days) {
  state.day = localMidnight((state.day ?? localMidnight(now())) + days * DAY + DAY / 2);
  loadBands().catch((error) => console.warn(error));
}

$("#day-back").addEventListener("click", () => moveDay(-1));
$("#day-next").addEventListener("click", () => moveDay(1));

// ---- limitations and violations ---------------------------------------------------------------------

function renderLimitations(list) {
  renderIfChanged($("#limitations"), list, (items) => table({
    caption: "Limitations posted by the DSO, newest first",
    empty: "No limitations posted.",
    rows: [...items].reverse(),
    columns: [
      { label: "Flexibility", value: (l) => l.flex_id },
      { label: "From", value: (l) => clock(l.start, true) },
      { label: "To", value: (l) => clock(l.end, l.end - l.start >= DAY) },
      { label: "Band kW", value: (l) => `${num(l.p_min_kw)}…${num(l.p_max_kw)}`, num: true },
    ],
  }));
}

function renderViolations(list) {
  renderIfChanged($("#violations"), list, (items) => table({
    caption: "Band violations, newest first",
    empty: "No band violations.",
    rows: [...items].reverse(),
    columns: [
      { label: "Slot", value: (v) => clock(v.slot * state.slotSeconds, true) },
      { label: "Flexibility", value: (v) => v.flex_id },
      { label: "Band kW", value: (v) => `${num(v.p_min_kw)}…${num(v.p_max_kw)}`, num: true },
      { label: "Outside kWh", value: (v) => num(v.outside_kwh, 3), num: true },
    ],
  }));
}

// ---- start ---------------------------------------------------------------------------------------------

async function start() {
  legend($("#voltage-legend"), VOLTAGE);
  legend($("#loading-legend"), LOADING, [
    h("li", {}, h("span", { className: "swatch bar", style: "height:12px;background:rgba(215,48,31,0.22)" }), "binding constraint"),
  ]);
  wireSignIn(session, {
    form: $("#key-form"), walletButton: $("#wallet-button"), keyField: $("#private-key"), status: $("#sign-in-status"),
  });
  try {
    const info = await api.get("/v1/community");
    state.slotSeconds = info.slot_minutes * 60;
    state.offset = info.now - Date.now() / 1000;
    $("#community-name").textContent = info.name;
    document.title = `Grid operator · ${info.name}`;
  } catch (error) {
    $("#sign-in-status").textContent = `The API does not answer: ${plainError(error)}`;
  }
  try {
    await session.restore();
  } catch (error) {
    $("#sign-in-status").textContent = plainError(error);
  }
  showSession();
}

start();
