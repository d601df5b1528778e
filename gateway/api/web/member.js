// The member page: sign in (wallet or a key kept in this tab), my bands and schedule, order
// entry signed in the browser, the order book, my orders, trades, balance, statements and
// band violations, refreshed every few seconds.

import {
  $, Api, ApiError, Session, clock, dl, every, h, num, plainError, plainOutcome, renderIfChanged,
  shortAddress, slotLabel, table, wireSignIn,
} from "/static/common.js";
import { ChartHost, timeChart } from "/static/charts.js";

const REFRESH_MS = 4000;
const SLOTS_AHEAD = 8;
const CHART_BACK_S = 3600;
const CHART_AHEAD_S = 3 * 3600;

const api = new Api();
const state = {
  slotSeconds: 900,
  offset: 0, // server clock − this clock, seconds
  lead: null, // gate closure lead, seconds before a slot starts
  me: null,
  bands: null, // the last answer of /v1/me/bands, for bandsFrom..bandsTo
  bandsFrom: 0,
  bandsTo: 0,
  bandsDue: true,
  ticks: 0,
  charts: new Map(),
  loop: null,
};

const now = () => Date.now() / 1000 + state.offset;
const currentSlot = () => Math.floor(now() / state.slotSeconds);

function say(element, text, kind = "info") {
  element.textContent = text;
  element.dataset.kind = kind;
}

// ---- sign-in state -------------------------------------------------------------------

const session = new Session(api, "member", showSession);

function showSession() {
  const signedIn = session.signedIn;
  $("#sign-in").hidden = signedIn;
  $("#app").hidden = !signedIn;
  $("#who").hidden = !signedIn;
  if (!signedIn) {
    Object.assign(state, { me: null, bands: null, bandsDue: true });
    return;
  }
  $("#who-address").textContent = shortAddress(session.address);
  $("#who-address").title = session.address;
  if (!state.loop) state.loop = every(REFRESH_MS, refresh);
  else state.loop.now();
}

$("#sign-out").addEventListener("click", () => session.signOut());

// ---- loads -----------------------------------------------------------------------------

async function loadMe() {
  try {
    state.me = await api.get("/v1/me", { auth: true });
    $("#not-member").hidden = true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) {
      $("#not-member").hidden = false;
      $("#not-member").textContent = `${session.address} is not a member of this community (${plainError(error)}). Sign out and use a member's key.`;
    }
    throw error;
  }
  $("#who-name").textContent = state.me.name || "";
  renderAssets();
}

function renderAssets() {
  const select = $("#order-asset");
  const flexMeters = new Set(state.me.flexibilities.map((f) => f.meter_id));
  const options = [
    ...state.me.flexibilities.filter((f) => f.active).map((f) => ({ value: `flexibility:${f.flex_id}`, label: `${f.flex_id} · ${f.kind.replace("_", " ")}` })),
    ...state.me.meters.filter((m) => m.active && !flexMeters.has(m.meter_id)).map((m) => ({ value: `meter:${m.meter_id}`, label: `${m.meter_id} · meter` })),
  ];
  const key = JSON.stringify(options);
  if (select.dataset.key === key) return;
  select.dataset.key = key;
  const chosen = select.value;
  select.replaceChildren(...options.map((o) => h("option", { value: o.value }, o.label)));
  if (options.some((o) => o.value === chosen)) select.value = chosen;
  updateHint();
}

function renderSlots() {
  const select = $("#order-slot");
  const lead = state.lead ?? 0;
  const first = currentSlot() + 1;
  const slots = [];
  for (let slot = first; slot < first + SLOTS_AHEAD; slot++) {
    const start = slot * state.slotSeconds;
    if (start - lead > now()) slots.push(slot);
  }
  const key = JSON.stringify([slots, lead]);
  if (select.dataset.key === key) return;
  select.dataset.key = key;
  const chosen = Number(select.value);
  select.replaceChildren(...slots.map((slot) => {
    const closes = slot * state.slotSeconds - lead;
    return h("option", { value: slot }, `${slotLabel(slot, state.slotSeconds)} · orders until ${clock(closes)}`);
  }));
  if (slots.includes(chosen)) select.value = String(chosen);
}

async function refresh() {
  renderSlots();
  if (!state.me) await loadMe();
  const slot = Number($("#order-slot").value) || currentSlot() + 1;
  const from = Math.floor((now() - CHART_BACK_S) / 60) * 60;
  const to = Math.floor((now() + CHART_AHEAD_S) / 60) * 60;
  // bands and schedule change once a minute or with my trades: every third refresh, or at once
  const bandsDue = state.bandsDue || state.ticks % 3 === 0;
  state.bandsDue = false;
  state.ticks += 1;
  const results = await Promise.allSettled([
    api.get("/v1/me/balance", { auth: true }).then(renderBalance),
    bandsDue
      ? api.get(`/v1/me/bands?from_time=${from}&to_time=${to}`, { auth: true }).then((bands) => renderBands(bands, from, to))
      : Promise.resolve(state.bands && renderBands(state.bands, state.bandsFrom, state.bandsTo)),
    api.get(`/v1/market/book?slot=${slot}`).then(renderBook),
    api.get("/v1/me/orders?open_only=true", { auth: true }).then(renderOpenOrders),
    api.get("/v1/me/trades?limit=50", { auth: true }).then(renderTrades),
    api.get("/v1/me/statements?limit=50", { auth: true }).then(renderStatements),
    api.get("/v1/me/violations?limit=50", { auth: true }).then(renderViolations),
  ]);
  const failed = results.find((r) => r.status === "rejected");
  const live = $("#live");
  live.dataset.state = failed ? "stale" : "live";
  live.textContent = failed ? "offline" : `live · ${clock(now())}`;
  live.title = failed ? plainError(failed.reason) : "refreshed every few seconds";
}

// ---- renderers -------------------------------------------------------------------------

function renderBalance(balance) {
  renderIfChanged($("#balance"), balance, (b) => dl([
    ["Wallet", num(b.wallet_tokens, 4)],
    ["Deposit, free", num(b.deposit_free, 4)],
    ["Deposit, locked in orders", num(b.deposit_locked, 4)],
    ["Debt", num(b.debt, 4), Number(b.debt) > 0 ? "warn" : null],
    ["Credit owed to me", num(b.credit, 4)],
  ]));
}

function chosenSlotSpan() {
  const slot = Number($("#order-slot").value);
  return slot ? [{ t0: slot * state.slotSeconds, t1: (slot + 1) * state.slotSeconds }] : [];
}

function renderBands(answer, from, to) {
  Object.assign(state, { bands: answer, bandsFrom: from, bandsTo: to });
  const container = $("#bands");
  if (!answer.flexibilities.length) {
    renderIfChanged(container, "none", () => h("p", { className: "empty" }, "You have no flexibilities; you can still trade with your meters."));
    state.charts.clear();
    return;
  }
  const ids = answer.flexibilities.map((f) => f.flex_id);
  const layout = JSON.stringify(ids);
  if (container.dataset.key !== layout) {
    container.dataset.key = layout;
    state.charts.clear();
    container.replaceChildren(...ids.map((id) => {
      const host = h("div", { className: "chart-host", id: `chart-${id}` });
      const box = h("figure", { className: "chart-box", style: "margin:6px 0 12px" },
        h("header", {}, h("strong", {}, id), h("span", { id: `band-now-${id}` })),
        host);
      state.charts.set(id, new ChartHost(host, drawBand));
      return box;
    }));
  }
  const info = new Map((state.me?.flexibilities ?? []).map((f) => [f.flex_id, f]));
  const t = now();
  for (const flex of answer.flexibilities) {
    const meta = info.get(flex.flex_id);
    const current = flex.points.filter((p) => p.time <= t && t < p.time + 60)[0];
    $(`#band-now-${CSS.escape(flex.flex_id)}`).textContent = [
      meta ? `${meta.kind.replace("_", " ")} · bus ${meta.bus}` : null,
      current ? `now ${num(current.p_min_kw)} … ${num(current.p_max_kw)} kW` : "no band now",
    ].filter(Boolean).join(" · ");
    const data = {
      id: flex.flex_id,
      from, to,
      now: Math.floor(t / 30) * 30,
      points: flex.points.map((p) => ({ t: p.time, lo: p.p_min_kw, hi: p.p_max_kw })),
      schedule: flex.schedule.map((s) => ({ t0: s.start, t1: s.end, y: s.avg_kw })),
      highlights: chosenSlotSpan(),
    };
    state.charts.get(flex.flex_id)?.update(data);
  }
  updateHint();
}

function drawBand(data, width) {
  const scheduled = data.schedule.length
    ? `; my schedule ${data.schedule.map((s) => `${clock(s.t0)} ${num(s.y)} kW`).join(", ")}`
    : "; nothing traded yet";
  return timeChart({
    width,
    height: width < 480 ? 190 : 230,
    t0: data.from,
    t1: data.to,
    label: `Band of ${data.id} from ${clock(data.from)} to ${clock(data.to)} in kW${scheduled}`,
    bands: [{ points: data.points }],
    steps: [{ segments: data.schedule }],
    highlights: data.highlights,
    now: data.now,
  });
}

function ownerLabel(owner) {
  return owner === session.address ? "you" : shortAddress(owner);
}

function renderBook(book) {
  state.lead = book.start - book.gate_closure;
  renderSlots();
  $("#book-slot").textContent = `${slotLabel(book.slot, state.slotSeconds)} · gate closes ${clock(book.gate_closure)}`;
  const columns = [
    { label: "Price", value: (o) => num(o.price, 6), num: true },
    { label: "kWh left", value: (o) => num(o.remaining_kwh, 3), num: true },
    { label: "Asset", value: (o) => o.asset_id },
    { label: "Who", value: (o) => ownerLabel(o.owner) },
  ];
  renderIfChanged($("#book"), { book, me: session.address }, () => h("div", { className: "book" },
    h("div", {},
      h("h3", { className: "bids" }, "Bids (buy)"),
      table({ caption: "Bids (buy orders), best first", columns, rows: book.bids, empty: "No bids.", rowKey: (o) => o.order_id })),
    h("div", {},
      h("h3", { className: "asks" }, "Asks (sell)"),
      table({ caption: "Asks (sell orders), best first", columns, rows: book.asks, empty: "No asks.", rowKey: (o) => o.order_id }))));
  for (const row of $("#book").querySelectorAll("tbody tr")) {
    if (row.lastElementChild?.textContent === "you") row.classList.add("mine");
  }
}

function renderOpenOrders(orders) {
  renderIfChanged($("#open-orders"), orders, (list) => table({
    caption: "My open orders",
    empty: "No open orders.",
    rows: list,
    rowKey: (o) => o.order_id,
    columns: [
      { label: "Slot", value: (o) => h("span", { className: "nowrap" }, slotLabel(o.slot, state.slotSeconds)) },
      {
        label: "Order",
        value: (o) => [
          h("span", { className: `badge ${o.side}` }, o.side), " ",
          o.remaining_kwh === o.energy_kwh ? `${num(o.energy_kwh, 3)} kWh` : `${num(o.remaining_kwh, 3)} of ${num(o.energy_kwh, 3)} kWh`,
          h("br"), h("span", { className: "note" }, o.asset_id),
        ],
      },
      { label: "Price", value: (o) => num(o.price, 6), num: true },
      {
        label: "",
        value: (o) => h("button", {
          type: "button", className: "small danger", "aria-label": `Cancel order ${o.order_id}`,
          onclick: (event) => cancelOrder(o, event.currentTarget),
        }, "Cancel"),
        num: true,
      },
    ],
  }));
}

function renderTrades(trades) {
  renderIfChanged($("#trades"), trades, (list) => table({
    caption: "My trades, newest first",
    empty: "No trades yet.",
    rows: [...list].reverse(),
    columns: [
      { label: "Slot", value: (t) => h("span", { className: "nowrap" }, slotLabel(t.slot, state.slotSeconds)) },
      {
        label: "Trade",
        value: (t) => [
          t.buyer === session.address ? h("span", { className: "badge buy" }, "bought") : h("span", { className: "badge sell" }, "sold"),
          " ", h("span", { className: "nowrap" }, `${num(t.energy_kwh, 3)} kWh`),
        ],
      },
      { label: "Price", value: (t) => num(t.price, 6), num: true },
      { label: "With", value: (t) => h("span", { className: "nowrap" }, ownerLabel(t.buyer === session.address ? t.seller : t.buyer)) },
    ],
  }));
}

function renderStatements(statements) {
  renderIfChanged($("#statements"), statements, (list) => table({
    caption: "My settlement statements, newest first",
    empty: "No settled slots yet.",
    rows: [...list].reverse(),
    columns: [
      { label: "Slot", value: (s) => clock(s.slot * state.slotSeconds, true) },
      { label: "Traded", value: (s) => num(s.traded_kwh, 3), num: true },
      { label: "Metered", value: (s) => num(s.metered_kwh, 3), num: true },
      { label: "Charge", value: (s) => num(s.charge, 4), num: true },
      { label: "Credit", value: (s) => num(s.credit, 4), num: true },
      { label: "Penalty", value: (s) => num(s.penalty, 4), num: true },
    ],
  }));
}

function renderViolations(violations) {
  renderIfChanged($("#violations"), violations, (list) => table({
    caption: "Band violations of my flexibilities, newest first",
    empty: "No band violations. Well done.",
    rows: [...list].reverse(),
    columns: [
      { label: "Slot", value: (v) => clock(v.slot * state.slotSeconds, true) },
      { label: "Flexibility", value: (v) => v.flex_id },
      { label: "Band kW", value: (v) => `${num(v.p_min_kw)}…${num(v.p_max_kw)}`, num: true },
      { label: "Outside kWh", value: (v) => num(v.outside_kwh, 3), num: true },
      { label: "Metered kWh", value: (v) => num(v.metered_kwh, 3), num: true },
    ],
  }));
}

// ---- order entry -------------------------------------------------------------------------

function orderInput() {
  const form = $("#order-form");
  const [kind, ...rest] = (form.asset.value || "").split(":");
  return {
    slot: Number(form.slot.value),
    side: form.side.value,
    asset_kind: kind,
    asset_id: rest.join(":"),
    energy_kwh: Number(form.energy.value),
    limit_price: form.price.value.trim(),
  };
}

function updateHint() {
  const order = orderInput();
  const hint = $("#order-hint");
  if (!order.slot || !(order.energy_kwh > 0)) {
    hint.textContent = "";
    return;
  }
  const hours = state.slotSeconds / 3600;
  const kw = (order.side === "buy" ? 1 : -1) * (order.energy_kwh / hours);
  let text = `${order.side === "buy" ? "Buying" : "Selling"} ${num(order.energy_kwh, 3)} kWh in this slot means ${num(kw)} kW on average`;
  if (order.asset_kind === "flexibility") {
    const flex = state.bands?.flexibilities.find((f) => f.flex_id === order.asset_id);
    const start = order.slot * state.slotSeconds;
    const inSlot = (flex?.points ?? []).filter((p) => p.time >= start && p.time < start + state.slotSeconds);
    if (inSlot.length) {
      const lo = Math.max(...inSlot.map((p) => p.p_min_kw));
      const hi = Math.min(...inSlot.map((p) => p.p_max_kw));
      text += `; ${order.asset_id}'s band in that slot allows ${num(lo)} … ${num(hi)} kW`;
    }
  }
  const price = Number(order.limit_price);
  if (order.side === "buy" && price >= 0) text += `; locks up to ${num(order.energy_kwh * price, 4)} tokens`;
  hint.textContent = `${text}.`;
}

$("#order-form").addEventListener("input", updateHint);
$("#order-form").addEventListener("change", (event) => {
  updateHint();
  if (event.target.name === "slot") state.loop?.now(); // the book of that slot, its span in the chart
});

$("#order-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const status = $("#order-status");
  const button = $("#order-submit");
  const order = orderInput();
  if (!order.slot) return say(status, "Choose a delivery slot.", "error");
  if (!order.asset_id) return say(status, "Choose one of your flexibilities or meters.", "error");
  if (!(order.energy_kwh > 0)) return say(status, "Enter the energy in kWh (more than 0).", "error");
  if (order.limit_price === "" || !(Number(order.limit_price) >= 0)) return say(status, "Enter a limit price in tokens per kWh.", "error");
  button.disabled = true;
  try {
    say(status, "Preparing the transaction…");
    const prepared = await api.post("/v1/me/orders/prepare", order, { auth: true });
    const outcome = await session.submit(prepared, (text) => say(status, text));
    const what = `${order.side === "buy" ? "Buy" : "Sell"} order for ${num(order.energy_kwh, 3)} kWh (${order.asset_id}, ${slotLabel(order.slot, state.slotSeconds)}, at most ${order.limit_price} tokens/kWh)`;
    if (outcome.status === "success") say(status, `Order placed: ${what}, block ${outcome.block}.`, "ok");
    else say(status, plainOutcome(outcome, what), "error");
  } catch (error) {
    say(status, `Not placed: ${plainError(error)}`, "error");
  } finally {
    button.disabled = false;
    state.bandsDue = true; // my schedule may have changed
    state.loop?.now();
  }
});

async function cancelOrder(order, button) {
  const status = $("#cancel-status");
  button.disabled = true;
  try {
    say(status, `Preparing the cancellation of order ${order.order_id}…`);
    const prepared = await api.post(`/v1/me/orders/${order.order_id}/cancel/prepare`, {}, { auth: true });
    const outcome = await session.submit(prepared, (text) => say(status, text));
    if (outcome.status === "success") say(status, `Order ${order.order_id} cancelled; its deposit is free again.`, "ok");
    else say(status, plainOutcome(outcome, `Cancelling order ${order.order_id}`), "error");
  } catch (error) {
    say(status, `Not cancelled: ${plainError(error)}`, "error");
    button.disabled = false;
  } finally {
    state.bandsDue = true;
    state.loop?.now();
  }
}

// ---- start ---------------------------------------------------------------------------------

async function start() {
  wireSignIn(session, {
    form: $("#key-form"), walletButton: $("#wallet-button"), keyField: $("#private-key"), status: $("#sign-in-status"),
  });
  try {
    const info = await api.get("/v1/community");
    state.slotSeconds = info.slot_minutes * 60;
    state.lead = info.gate_closure_lead_s;
    state.offset = info.now - Date.now() / 1000;
    $("#community-name").textContent = info.name;
    document.title = `Member · ${info.name}`;
  } catch (error) {
    say($("#sign-in-status"), `The API does not answer: ${plainError(error)}`, "error");
  }
  try {
    await session.restore();
  } catch (error) {
    say($("#sign-in-status"), plainError(error), "error");
  }
  showSession();
}

start();
