// Shared by the member and DSO pages: the API client (problem details), Sign-In with
// Ethereum, the wallet (an EIP-1193 wallet or a key kept in this browser tab), signing and
// relaying transactions, small DOM and formatting helpers.

const ethers = window.ethers;

// ---- DOM --------------------------------------------------------------------------------

export const $ = (selector, root = document) => root.querySelector(selector);

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "className") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace the children of ``element`` with ``build()`` only when ``data`` changed. */
export function renderIfChanged(element, data, build) {
  const key = JSON.stringify(data);
  if (element.dataset.key === key) return false;
  element.dataset.key = key;
  element.replaceChildren(...[build(data)].flat().filter((child) => child !== null && child !== undefined && child !== false));
  return true;
}

/**
 * A table: columns [{label, value: row => text|Node, num?: bool}], rows; caption for
 * screen readers; ``empty`` when there are no rows.
 */
export function table({ caption, columns, rows, empty = "Nothing yet.", rowKey = null }) {
  if (!rows.length) return h("p", { className: "empty" }, empty);
  return h("div", { className: "table-wrap" },
    h("table", {},
      h("caption", { className: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", className: c.num ? "num" : null }, c.label)))),
      h("tbody", {}, rows.map((row) =>
        h("tr", { "data-key": rowKey ? rowKey(row) : null },
          columns.map((c) => h("td", { className: c.num ? "num" : null }, c.value(row) ?? "–")))))));
}

export function dl(pairs) {
  return h("dl", { className: "facts" }, pairs.map(([term, value, cls]) =>
    h("div", { className: cls ?? null }, h("dt", {}, term), h("dd", {}, value))));
}

// ---- formatting -----------------------------------------------------------------------

export function clock(unix, withDate = false) {
  const date = new Date(unix * 1000);
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
  if (!withDate) return time;
  return `${date.toLocaleDateString([], { day: "numeric", month: "short" })} ${time}`;
}

export function num(value, digits = 2) {
  if (value === null || value === undefined || value === "") return "–";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  return n.toLocaleString(undefined, { minimumFractionDigits: 0, maximumFractionDigits: digits });
}

export function shortAddress(address) {
  return address ? `${address.slice(0, 6)}…${address.slice(-4)}` : "";
}

export function slotLabel(slot, slotSeconds) {
  const start = slot * slotSeconds;
  return `${clock(start)}–${clock(start + slotSeconds)}`;
}

// ---- the API ------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem ?? {};
  }
}

// Contract errors in plain words (the problem's ``error`` names the contract's custom error).
const CONTRACT_ERRORS = {
  BandExceeded: "The order would take the flexibility outside the band the grid operator allows for that slot.",
  OutsideBand: "The order would take the flexibility outside the band the grid operator allows for that slot.",
  BandNotPublished: "The grid operator has not published a band for this flexibility and slot yet.",
  GateClosed: "Trading for this slot has closed (gate closure). Choose a later slot.",
  SlotBeyondHorizon: "That slot is too far ahead; the market is not open for it yet.",
  InsufficientDeposit: "Your free deposit is too small to cover this order.",
  InvalidPrice: "The limit price is not on the market's price tick.",
  InvalidQuantity: "The energy is outside what one order may hold.",
  MarketPaused: "The market is paused by its operator.",
  NotAssetOwner: "That meter or flexibility is not yours.",
  UnknownAsset: "The market does not know that meter or flexibility.",
  MeterMeasuresFlexibility: "That meter measures a flexibility: trade with the flexibility instead.",
  SelfTrade: "The order would trade with one of your own orders.",
  TooManyOpenOrders: "You have too many open orders for this slot.",
  BookFull: "The order book of this slot is full.",
  OrderNotOpen: "The order is no longer open.",
  NotOrderOwner: "That order is not yours.",
  UnknownOrder: "There is no such order.",
};

/** The numbers of a contract error that help the user, in their units. */
function contractDetails(error, args) {
  const kw = (w) => num(Number(w) / 1000, 3);
  if (error === "BandExceeded" && args.requestedW !== undefined) {
    return `It asks for ${kw(args.requestedW)} kW on average; the band allows ${Number(args.requestedW) < 0 ? "down to" : "up to"} ${kw(args.allowedW)} kW.`;
  }
  if (error === "GateClosed" && args.gateClosureTime !== undefined) return `It closed at ${clock(Number(args.gateClosureTime))}.`;
  return `(contract error ${error})`;
}

/** A problem (or any error) as a sentence for the user. */
export function plainError(error) {
  if (error instanceof ApiError) {
    const p = error.problem;
    const known = p.error && CONTRACT_ERRORS[p.error];
    if (known) return `${known} ${contractDetails(p.error, p.args ?? {})}`.trim();
    if (p.errors?.length) return p.errors.map((e) => `${e.field}: ${e.message}`).join("; ");
    return p.detail || p.title || `The server answered ${error.status}.`;
  }
  if (error?.code === 4001 || error?.code === "ACTION_REJECTED") return "You declined in your wallet.";
  if (error?.code === "INVALID_ARGUMENT" || error?.code === "BAD_DATA") return `The key or transaction is not valid: ${error.shortMessage ?? error.message}`;
  return error?.shortMessage || error?.message || String(error);
}

export class Api {
  constructor() {
    this.session = null; // set by Session
  }

  async request(method, path, body, { auth = false, retry = true } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth || this.session?.token) {
      if (auth && !this.session?.token) await this.session?.renew();
      if (this.session?.token) headers.Authorization = `Bearer ${this.session.token}`;
    }
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (response.status === 401 && auth && retry && this.session) {
      await this.session.renew(); // sign in again (the token ended or was refused)
      return this.request(method, path, body, { auth, retry: false });
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = { detail: text };
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  get(path, options) {
    return this.request("GET", path, undefined, options);
  }

  post(path, body, options) {
    return this.request("POST", path, body ?? {}, options);
  }
}

// ---- wallets --------------------------------------------------------------------------

/** A key that stays in this browser tab (sessionStorage); ethers signs with it. */
class KeyWallet {
  constructor(key) {
    this.kind = "key";
    this.signer = new ethers.Wallet(key.startsWith("0x") ? key : `0x${key}`);
    this.address = this.signer.address;
  }

  signMessage(message) {
    return this.signer.signMessage(message); // personal_sign (EIP-191)
  }

  async sendPrepared(api, tx) {
    const raw = await this.signer.signTransaction(ethersTransaction(tx));
    return (await api.post("/v1/tx", { raw })).hash;
  }
}

/** A wallet in the browser (window.ethereum, EIP-1193). */
class InjectedWallet {
  constructor(provider, address) {
    this.kind = "injected";
    this.provider = provider;
    this.address = ethers.getAddress(address);
  }

  static async connect(ask = true) {
    const provider = window.ethereum;
    const accounts = await provider.request({ method: ask ? "eth_requestAccounts" : "eth_accounts" });
    if (!accounts?.length) throw new Error("The wallet shared no account.");
    return new InjectedWallet(provider, accounts[0]);
  }

  signMessage(message) {
    return this.provider.request({ method: "personal_sign", params: [ethers.hexlify(ethers.toUtf8Bytes(message)), this.address] });
  }

  async sendPrepared(api, tx) {
    const chainId = BigInt(await this.provider.request({ method: "eth_chainId" }));
    if (chainId !== BigInt(tx.chainId)) {
      try {
        await this.provider.request({ method: "wallet_switchEthereumChain", params: [{ chainId: ethers.toQuantity(BigInt(tx.chainId)) }] });
      } catch {
        throw new Error(`Your wallet is on chain ${chainId}; switch it to the community's chain ${BigInt(tx.chainId)}.`);
      }
    }
    const request = {
      from: this.address,
      to: tx.to,
      data: tx.data,
      value: ethers.toQuantity(BigInt(tx.value ?? 0)),
      gas: ethers.toQuantity(BigInt(tx.gas)),
      nonce: ethers.toQuantity(BigInt(tx.nonce)),
      maxFeePerGas: ethers.toQuantity(BigInt(tx.maxFeePerGas)),
      maxPriorityFeePerGas: ethers.toQuantity(BigInt(tx.maxPriorityFeePerGas)),
      chainId: ethers.toQuantity(BigInt(tx.chainId)),
      type: "0x2",
    };
    try {
      const raw = await this.provider.request({ method: "eth_signTransaction", params: [request] });
      return (await api.post("/v1/tx", { raw })).hash;
    } catch (error) {
      if (error?.code === 4001) throw error;
      // Most wallets (MetaMask) do not sign without sending: let the wallet send it.
      const { nonce, ...withoutNonce } = request;
      return this.provider.request({ method: "eth_sendTransaction", params: [withoutNonce] });
    }
  }
}

export function ethersTransaction(tx) {
  return {
    type: Number(tx.type ?? 2),
    to: tx.to,
    data: tx.data ?? "0x",
    value: BigInt(tx.value ?? 0),
    gasLimit: BigInt(tx.gas),
    nonce: Number(tx.nonce),
    maxFeePerGas: BigInt(tx.maxFeePerGas),
    maxPriorityFeePerGas: BigInt(tx.maxPriorityFeePerGas),
    chainId: BigInt(tx.chainId),
  };
}

// ---- Sign-In with Ethereum ---------------------------------------------------------------

export const STATEMENT = "Sign in to the energy community.";

/** The EIP-4361 message text. */
export function siweMessage({ domain, address, uri, chainId, nonce, issuedAt, statement = STATEMENT }) {
  return [
    `${domain} wants you to sign in with your Ethereum account:`,
    address,
    "",
    statement,
    "",
    `URI: ${uri}`,
    "Version: 1",
    `Chain ID: ${chainId}`,
    `Nonce: ${nonce}`,
    `Issued At: ${issuedAt}`,
  ].join("\n");
}

/**
 * Who is signed in: the wallet, the token and roles. Kept per page in sessionStorage (the
 * in-browser key too, when the member chose one: it never leaves this tab).
 */
export class Session {
  constructor(api, page, onChange) {
    this.api = api;
    this.page = page;
    this.onChange = onChange;
    this.wallet = null;
    this.token = null;
    this.address = null;
    this.roles = [];
    this.expires = 0;
    api.session = this;
  }

  get signedIn() {
    return Boolean(this.token && this.address);
  }

  storageKey(what) {
    return `lec.${this.page}.${what}`;
  }

  /** Restore after a reload: the key wallet, the token while it is still good. */
  async restore() {
    const key = sessionStorage.getItem(this.storageKey("key"));
    if (key) {
      try {
        this.wallet = new KeyWallet(key);
      } catch {
        sessionStorage.removeItem(this.storageKey("key"));
      }
    } else if (sessionStorage.getItem(this.storageKey("wallet")) === "injected" && window.ethereum) {
      this.wallet = await InjectedWallet.connect(false).catch(() => null);
    }
    const saved = JSON.parse(sessionStorage.getItem(this.storageKey("session")) || "null");
    if (saved && saved.expires * 1000 > Date.now() + 30_000 && (!this.wallet || saved.address === this.wallet.address)) {
      Object.assign(this, { token: saved.token, address: saved.address, roles: saved.roles, expires: saved.expires });
      this.onChange?.(this);
      return true;
    }
    if (this.wallet?.kind === "key") {
      await this.signIn();
      return true;
    }
    return false;
  }

  async useKey(key) {
    const wallet = new KeyWallet(key.trim());
    this.wallet = wallet;
    await this.signIn();
    sessionStorage.setItem(this.storageKey("key"), wallet.signer.privateKey);
  }

  async useInjected() {
    this.wallet = await InjectedWallet.connect(true);
    await this.signIn();
    sessionStorage.setItem(this.storageKey("wallet"), "injected");
  }

  /** SIWE: nonce → EIP-4361 message → personal_sign → token. */
  async signIn() {
    if (!this.wallet) throw new Error("Choose a wallet first.");
    const { nonce, chain_id: chainId } = await this.api.get("/v1/auth/nonce");
    const message = siweMessage({
      domain: location.host,
      address: this.wallet.address,
      uri: location.origin,
      chainId,
      nonce,
      issuedAt: new Date().toISOString().replace(/\.\d{3}Z$/, "Z"),
    });
    const signature = await this.wallet.signMessage(message);
    const answer = await this.api.post("/v1/auth/siwe", { message, signature });
    Object.assign(this, { token: answer.token, address: answer.address, roles: answer.roles ?? [], expires: answer.expires });
    sessionStorage.setItem(this.storageKey("session"), JSON.stringify(answer));
    this.onChange?.(this);
  }

  /** After a 401: sign in again when the wallet can, else show the sign-in form. */
  renew() {
    // parallel requests that all met a 401 share one sign-in
    this.renewing ??= this.renewOnce().finally(() => {
      this.renewing = null;
    });
    return this.renewing;
  }

  async renewOnce() {
    this.token = null;
    sessionStorage.removeItem(this.storageKey("session"));
    if (this.wallet) {
      try {
        await this.signIn();
        return;
      } catch (error) {
        this.signOut();
        throw error;
      }
    }
    this.signOut();
  }

  signOut() {
    for (const what of ["key", "session", "wallet"]) sessionStorage.removeItem(this.storageKey(what));
    Object.assign(this, { wallet: null, token: null, address: null, roles: [], expires: 0 });
    this.onChange?.(this);
  }

  /**
   * Sign prepared transactions ({transactions:[...], summary}) in the browser one after the
   * other, relay them and follow each to its block; the last status (or the first failure).
   */
  async submit(prepared, report) {
    if (!this.wallet) {
      this.signOut();
      throw new Error("Sign in with your wallet or key again to sign transactions.");
    }
    const list = prepared.transactions ?? [prepared.transaction ?? prepared];
    let outcome = null;
    for (const [position, tx] of list.entries()) {
      const step = list.length > 1 ? ` (${position + 1} of ${list.length})` : "";
      report(`Signing in your browser${step}…`);
      const hash = await this.wallet.sendPrepared(this.api, tx);
      report(`Sent${step}: ${hash.slice(0, 10)}…; waiting for a block…`);
      outcome = await this.follow(hash);
      if (outcome.status !== "success") return outcome;
    }
    return outcome;
  }

  async follow(hash, timeoutMs = 90_000) {
    const deadline = Date.now() + timeoutMs;
    let last = { hash, status: "pending" };
    while (Date.now() < deadline) {
      try {
        last = await this.api.get(`/v1/tx/${hash}`);
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 404)) throw error;
      }
      if (last.status === "success" || last.status === "failed") return last;
      await new Promise((resolve) => setTimeout(resolve, 700));
    }
    return last;
  }
}

/** A transaction's outcome in plain words. */
export function plainOutcome(outcome, what = "Transaction") {
  if (outcome.status === "success") return `${what} done (block ${outcome.block}).`;
  if (outcome.status === "failed") {
    const known = outcome.error && CONTRACT_ERRORS[outcome.error];
    return `${what} failed: ${known ?? outcome.detail ?? outcome.error ?? "the contract refused it"}${known && outcome.detail ? ` (${outcome.detail})` : ""}`;
  }
  return `${what} is still waiting for a block (${outcome.hash.slice(0, 10)}…). It may still go through.`;
}

// ---- the sign-in card (both pages) ----------------------------------------------------------

/** Wires the sign-in form: a wallet button when window.ethereum exists, else a key field. */
export function wireSignIn(session, { form, walletButton, keyField, status }) {
  const say = (text, kind = "info") => {
    status.textContent = text;
    status.dataset.kind = kind;
  };
  if (window.ethereum) {
    walletButton.hidden = false;
    walletButton.addEventListener("click", async () => {
      say("Confirm the sign-in in your wallet…");
      try {
        await session.useInjected();
        say("");
      } catch (error) {
        say(plainError(error), "error");
      }
    });
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = keyField.value.trim();
    if (!key) {
      say("Paste your private key first.", "error");
      return;
    }
    say("Signing in…");
    try {
      await session.useKey(key);
      keyField.value = "";
      say("");
    } catch (error) {
      say(plainError(error), "error");
    }
  });
}

/** A loop that calls ``fn`` every ``ms`` (paused while the tab is hidden). */
export function every(ms, fn) {
  let timer = null;
  const tick = async () => {
    clearTimeout(timer);
    if (!document.hidden) {
      try {
        await fn();
      } catch (error) {
        console.warn("refresh failed", error);
      }
    }
    timer = setTimeout(tick, ms);
  };
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) tick();
  });
  tick();
  return { now: tick };
}
