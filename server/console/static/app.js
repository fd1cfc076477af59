// amtops console: plain JavaScript over the REST API (/api/v1/) and the
// server's one shared event stream (/api/v1/events). No framework, no
// build step. Pages are built with DOM calls, never from HTML strings, so
// device names cannot inject markup.
"use strict";

const state = { token: sessionStorage.getItem("amtops.token") || "", cert: sessionStorage.getItem("amtops.cert") === "1",
  role: "", name: "", stream: null, onEvent: {} };

// h builds an element: h("a", {href: "#"}, "text", child...).
function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    // Through CSSOM: the Content-Security-Policy refuses style attributes.
    else if (k === "style") e.style.cssText = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  return add(e, kids);
}

// summary and details split a stored failure reason: its first line is
// for people ("unreachable: 16993 refused"), the lines after are the chain.
function summary(reason) { return String(reason || "").split("\n")[0]; }
function details(reason) { return String(reason || "").split("\n").slice(1).join("\n"); }

// add appends kids (nodes, text, nested arrays; null and false skipped).
function add(e, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === undefined || k === null || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

// fill replaces e's children with kids.
function fill(e, ...kids) {
  e.replaceChildren();
  return add(e, kids);
}

// op is a button that changes something: disabled for the read role
// (the server refuses the call anyway).
function op(label, fn, attrs) {
  const b = h("button", Object.assign({ class: "op", onclick: async (ev) => {
    ev.preventDefault();
    try { await fn(); } catch (e) { showError(e); }
  } }, attrs || {}), label);
  if (state.role !== "operate") { b.disabled = true; b.title = "needs the operate role"; }
  return b;
}

async function api(method, path, body) {
  const headers = {};
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch("/api/v1/" + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch (e) { data = { message: text }; }
  if (!r.ok) {
    const err = new Error(data.message || r.statusText);
    err.status = r.status;
    throw err;
  }
  return data;
}

function showError(e) {
  const box = document.getElementById("page-error");
  if (box) box.textContent = e.status ? e.status + ": " + e.message : String(e.message || e);
}

const num = (v) => Number(v || 0);
const shortStatus = (s) => String(s || "").replace(/^DEVICE_STATUS_/, "").toLowerCase().replace(/_/g, " ");
const shortKind = (k) => String(k || "").replace(/^JOB_KIND_/, "").toLowerCase().replace(/_/g, " ");
const when = (t) => (t ? new Date(t).toLocaleString() : "—");
const enc = encodeURIComponent;

// ---- live updates: one stream per console, parsed by hand because
// EventSource cannot send an Authorization header.
function stream(device) {
  if (state.stream) state.stream.abort();
  const ctl = new AbortController();
  state.stream = ctl;
  const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
  const url = "/api/v1/events" + (device ? "?device=" + enc(device) : "");
  fetch(url, { headers, signal: ctl.signal }).then(async (r) => {
    if (!r.ok || !r.body) return;
    const rd = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await rd.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let name = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        const fn = state.onEvent[name];
        if (fn && data) fn(JSON.parse(data));
      }
    }
  }).catch(() => {}).finally(() => {
    // Reconnect after a drop unless a new page replaced this stream.
    if (state.stream === ctl && !ctl.signal.aborted) setTimeout(() => { if (state.stream === ctl) stream(device); }, 3000);
  });
}

// ---- login
async function login(token, cert) {
  state.token = token;
  state.cert = cert;
  try {
    const me = await api("GET", "whoami");
    state.role = me.role;
    state.name = me.name;
  } catch (e) {
    state.token = "";
    document.getElementById("login-error").textContent = "Login refused: " + e.message;
    return false;
  }
  sessionStorage.setItem("amtops.token", token);
  sessionStorage.setItem("amtops.cert", cert ? "1" : "0");
  document.getElementById("who").textContent = state.name + " (" + state.role + ")";
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  if (!location.hash || location.hash === "#/login") location.hash = "#/overview";
  route();
  return true;
}

function logout() {
  sessionStorage.removeItem("amtops.token");
  sessionStorage.removeItem("amtops.cert");
  location.hash = "";
  location.reload();
}

// ---- router
const pages = {};

function params() {
  const q = location.hash.split("?")[1] || "";
  return Object.fromEntries(new URLSearchParams(q));
}

async function route() {
  if (!state.role) return;
  const path = location.hash.slice(2).split("?")[0] || "overview";
  const [name, ...rest] = path.split("/");
  const page = pages[name] || pages.overview;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.getAttribute("href") === "#/" + name);
  state.onEvent = {};
  const main = document.getElementById("main");
  fill(main, h("p", { id: "page-error", class: "error" }));
  try {
    await page(main, decodeURIComponent(rest.join("/")), params());
  } catch (e) {
    showError(e);
  }
}

// ---- overview
function countTable(title, counts, link) {
  const entries = Object.entries(counts || {}).sort((a, b) => num(b[1]) - num(a[1]));
  const max = Math.max(1, ...entries.map((e) => num(e[1])));
  return h("div", { class: "card" }, h("h3", {}, title),
    entries.length ? h("table", {}, entries.map(([k, v]) => h("tr", {},
      h("td", {}, link ? h("a", { href: link(k) }, k) : k),
      h("td", {}, num(v)),
      h("td", {}, h("span", { class: "bar", style: "width:" + Math.round((num(v) / max) * 8) + "em" }))))) :
      h("p", { class: "muted" }, "none"));
}

pages.overview = async (main) => {
  const box = h("div", { id: "overview" });
  main.append(h("h1", {}, "Fleet overview"), box);
  const render = (s) => {
    const perMin = s.provisionedPerMinute || [];
    const max = Math.max(1, ...perMin);
    const hour = perMin.reduce((a, b) => a + b, 0);
    const status = {};
    for (const [k, v] of Object.entries(s.byStatus || {})) status[shortStatus(k)] = v;
    fill(box,
      h("div", { class: "cards" },
        h("div", { class: "card" }, h("h3", {}, "Devices"), h("div", { class: "big", id: "total-devices" }, num(s.devices))),
        h("div", { class: "card" }, h("h3", {}, "Failed"), h("div", { class: "big error" }, h("a", { href: "#/devices?failed=1" }, num(s.failed)))),
        h("div", { class: "card" }, h("h3", {}, "Agents"),
          h("div", {}, h("span", { class: "big ok", id: "agents-online" }, s.agentsOnline || 0), " online, ",
            h("span", { class: "big" }, s.agentsOffline || 0), " offline"))),
      h("div", { class: "cards" },
        countTable("By status", status, (k) => "#/devices?status=DEVICE_STATUS_" + k.toUpperCase().replace(/ /g, "_")),
        countTable("By control mode", s.byControlMode),
        countTable("By AMT generation", s.byGeneration, (k) => "#/devices?generation=" + enc(k)),
        countTable("Readiness blockers", s.blockers)),
      h("h2", {}, "Provisioned in the last hour: " + hour),
      h("div", { class: "chart", title: "devices provisioned per minute, oldest left" },
        perMin.map((v, i) => h("div", { style: "height:" + Math.round((v / max) * 100) + "%", title: (60 - i) + " min ago: " + v }))),
      h("p", { class: "muted" }, "as of " + when(s.computedAt)));
  };
  render(await api("GET", "summary"));
  state.onEvent.summary = (msgs) => render(msgs[0]);
  stream();
};

// ---- devices
const STATUSES = ["UNKNOWN", "NOT_SUPPORTED", "DETECTED", "NOT_PROVISIONED", "PROVISIONED", "EXTERNALLY_PROVISIONED"];

pages.devices = async (main, _, p) => {
  const cols = await api("GET", "collections");
  const f = {
    query: h("input", { name: "query", placeholder: "name, FQDN, IP or UUID", value: p.query || "" }),
    status: h("select", { name: "status" }, h("option", { value: "" }, "any status"),
      STATUSES.map((s) => h("option", { value: "DEVICE_STATUS_" + s, selected: p.status === "DEVICE_STATUS_" + s }, shortStatus(s)))),
    collection: h("select", { name: "collection" }, h("option", { value: "" }, "any collection"),
      (cols.collections || []).map((c) => h("option", { value: c.name, selected: p.collection === c.name }, c.name))),
    subnet: h("input", { name: "subnet", placeholder: "subnet (CIDR)", value: p.subnet || "", size: 16 }),
    generation: h("input", { name: "generation", placeholder: "AMT gen.", value: p.generation || "", size: 7 }),
    failed: h("input", { type: "checkbox", name: "failed", checked: p.failed === "1" }),
  };
  const table = h("table", { id: "device-table" });
  const pager = h("div", { class: "toolbar" });
  const form = h("form", { class: "inline", onsubmit: (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, el] of Object.entries(f)) {
      if (k === "failed") { if (el.checked) q.set(k, "1"); } else if (el.value) q.set(k, el.value);
    }
    location.hash = "#/devices?" + q.toString();
  } }, f.query, f.status, f.collection, f.subnet, f.generation, h("label", {}, f.failed, " failed"),
  h("button", { type: "submit", id: "device-search" }, "Search"));
  main.append(h("h1", {}, "Devices"), form, table, pager);

  // Cursor paging: the server pages in ID order; earlier cursors are kept
  // to go back. Never more than one page is loaded.
  const cursors = [""];
  const load = async (i) => {
    const q = new URLSearchParams({ limit: "50" });
    for (const k of ["query", "status", "collection", "subnet", "generation"]) if (p[k]) q.set(k, p[k]);
    if (p.failed === "1") q.set("failed", "true");
    if (cursors[i]) q.set("cursor", cursors[i]);
    const page = await api("GET", "devices?" + q.toString());
    fill(table, h("tr", {}, ["ID", "FQDN", "IP", "Status", "Mode", "AMT", "Last error"].map((t) => h("th", {}, t))),
      (page.devices || []).map((d) => h("tr", { class: d.lastError ? "failed-row" : "" },
        h("td", {}, h("a", { href: "#/device/" + enc(d.id), class: "device-link" }, d.id)), h("td", {}, d.fqdn), h("td", {}, d.ip),
        h("td", {}, shortStatus(d.status)), h("td", {}, d.controlMode || "—"), h("td", {}, d.amtVersion || "—"),
        h("td", { class: "error" }, d.lastErrorStep ? d.lastErrorStep + ": " + summary(d.lastError) : summary(d.lastError)))));
    cursors[i + 1] = page.nextCursor;
    fill(pager,
      h("button", { id: "prev-page", disabled: i === 0, onclick: () => load(i - 1) }, "Previous"),
      h("span", {}, "page " + (i + 1)),
      h("button", { id: "next-page", disabled: !page.nextCursor, onclick: () => load(i + 1) }, "Next"));
  };
  await load(0);
};

// ---- one device
pages.device = async (main, id) => {
  const box = h("div", { id: "device" });
  main.append(box);
  let shown = "";
  const render = (d, log) => {
    if (JSON.stringify([d, log]) === shown) return; // as on the batch page
    shown = JSON.stringify([d, log]);
    const rows = [["ID", d.id], ["UUID", d.uuid], ["FQDN", d.fqdn], ["IP", d.ip], ["Subnet", d.subnet],
      ["Status", shortStatus(d.status)], ["Control mode", d.controlMode || "—"], ["AMT version", d.amtVersion || "—"],
      ["Provisioning state", d.provisioningState], ["AD computer", d.computerDn || "—"],
      ["AMT account in AD", d.adAccountDn || "—"], ["SPNs", (d.spns || []).join(", ") || "—"],
      ["Collections", (d.collections || []).join(", ") || "—"], ["Auto-provisioning", d.suppressAutoProvision ? "suppressed" : "allowed"],
      ["Provisioned", when(d.provisionedAt)], ["Updated", when(d.updatedAt)]];
    fill(box, h("h1", {}, d.fqdn || d.id),
      d.lastError ? h("p", { class: "error", id: "device-error" }, "Failed at " + (d.lastErrorStep || "?") + ": " + summary(d.lastError)) : null,
      details(d.lastError) ? h("details", { id: "device-error-details" }, h("summary", {}, "Details"), h("pre", {}, details(d.lastError))) : null,
      (d.warnings || []).map((w) => h("p", { class: "muted" }, "warning: " + w)),
      h("table", {}, rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v)))),
      h("div", { class: "toolbar" },
        op("Provision", () => startBatch({ kind: "JOB_KIND_PROVISION", deviceIds: [d.id] })),
        op("Update", () => startBatch({ kind: "JOB_KIND_UPDATE", deviceIds: [d.id] })),
        op("Remove configuration", () => startBatch({ kind: "JOB_KIND_REMOVE_CONFIG", deviceIds: [d.id] }))),
      h("h2", {}, "Certificates"),
      (d.certificates || []).length === 0 ? h("p", { class: "muted" }, "The site has issued no certificate for this device.") :
        h("table", { id: "device-certs" }, h("tr", {}, ["Serial", "Purpose", "Profile", "Not after", "Installed", "Revoked"].map((t) => h("th", {}, t))),
          d.certificates.map((c) => h("tr", { class: c.state === "revoked" || c.state === "not-issued" ? "muted" : "" },
            h("td", {}, c.serial), h("td", {}, c.purpose), h("td", {}, c.profile), h("td", {}, when(c.notAfter)),
            h("td", {}, c.state === "installed" ? "yes" : "no"),
            h("td", {}, c.state === "revoked" ? "yes (" + (c.revocationReason || "?") + ", " + when(c.revokedAt) + ")" :
              c.state === "not-issued" ? "never issued" : c.state === "requested" ? "no (asked of the CA, answer not recorded)" : "no")))),
      h("h2", {}, "Operation log (both phases)"),
      h("table", { id: "device-log" }, h("tr", {}, ["Time", "Phase", "Step", "Outcome", "Detail", "Actor", "Job"].map((t) => h("th", {}, t))),
        (log.events || []).map((e) => h("tr", { class: /FAIL/.test(e.outcome) ? "failed-row" : "" },
          h("td", {}, when(e.time)), h("td", {}, e.phase), h("td", {}, e.step), h("td", {}, String(e.outcome).replace(/^OUTCOME_/, "").toLowerCase()),
          h("td", {}, e.detail), h("td", {}, e.actor), h("td", {}, e.jobId)))));
  };
  render(await api("GET", "devices/" + enc(id)), await api("GET", "devices/" + enc(id) + "/log?limit=200"));
  state.onEvent.device = (msgs) => render(msgs[0].devices[0], msgs[1]);
  stream(id);
};

// ---- batches
async function startBatch(req) {
  if (req.kind === "JOB_KIND_REMOVE_ALL" &&
      prompt("Removing configuration AND identity cannot be undone. Type REMOVE ALL to go on.") !== "REMOVE ALL") return;
  if (req.kind === "JOB_KIND_REMOVE_CONFIG" && !confirm("Remove the AMT configuration (identity is kept)?")) return;
  const b = await api("POST", "batches", req);
  location.hash = "#/batch/" + enc(b.id);
}

function progress(b) {
  const done = (b.succeeded || 0) + (b.failed || 0) + (b.cancelled || 0);
  const pct = b.total ? Math.round((done / b.total) * 100) : 100;
  return h("span", { class: "progress" }, h("progress", { max: 100, value: pct }), " " + pct + "% ",
    h("span", { class: "ok" }, (b.succeeded || 0) + " ok"), " · ", h("span", { class: "error" }, (b.failed || 0) + " failed"),
    " · " + (b.cancelled || 0) + " cancelled of " + b.total + (b.done ? " — done" : b.cancelRequested ? " — cancel requested" : ""));
}

pages.batches = async (main) => {
  const kind = h("select", { id: "batch-kind" },
    [["JOB_KIND_PROVISION", "provision"], ["JOB_KIND_UPDATE", "update"], ["JOB_KIND_REMOVE_CONFIG", "remove (keep identity)"],
      ["JOB_KIND_REMOVE_ALL", "remove all (configuration and identity)"], ["JOB_KIND_DISCOVER", "discover"]]
      .map(([v, t]) => h("option", { value: v }, t)));
  const devices = h("input", { id: "batch-devices", placeholder: "devices: IDs, FQDNs or IPs", size: 30 });
  const collection = h("input", { id: "batch-collection", placeholder: "or a collection" });
  const subnets = h("input", { id: "batch-subnets", placeholder: "subnets (discover)" });
  const c8021x = h("input", { type: "checkbox", id: "batch-8021x" });
  const suppress = h("input", { type: "checkbox", id: "batch-suppress" });
  const split = (s) => s.split(/[\s,]+/).filter(Boolean);
  const table = h("table", { id: "batch-table" });
  main.append(h("h1", {}, "Batches"),
    h("form", { class: "inline" }, kind, devices, collection, subnets,
      h("label", { title: "apply settings over 802.1X links even if they may drop the link (S15)" }, c8021x, " confirm 802.1X"),
      h("label", {}, suppress, " suppress auto-provisioning after removal"),
      op("Start", () => startBatch({ kind: kind.value, deviceIds: split(devices.value), collection: collection.value,
        subnets: split(subnets.value), confirm8021x: c8021x.checked, suppressAutoProvision: suppress.checked }), { id: "batch-start" })),
    table);
  const render = (list) => fill(table, h("tr", {}, ["Batch", "Kind", "Started", "By", "Progress"].map((t) => h("th", {}, t))),
    (list.batches || []).map((b) => h("tr", {}, h("td", {}, h("a", { href: "#/batch/" + enc(b.id) }, b.id)), h("td", {}, shortKind(b.kind)),
      h("td", {}, when(b.createdAt)), h("td", {}, b.requester), h("td", {}, progress(b)))));
  render(await api("GET", "batches?limit=50"));
  state.onEvent.batches = (msgs) => render(msgs[0]);
  stream();
};

pages.batch = async (main, id) => {
  const head = h("div", { id: "batch" });
  const failures = h("div", { id: "failures" });
  main.append(head, h("h2", {}, "Failures by step and reason"), failures);
  let lastFailed = -1;
  const failed = async () => {
    const jobs = [];
    let cursor = "";
    for (let i = 0; i < 10; i++) { // at most 10 pages of 500
      const page = await api("GET", "batches/" + enc(id) + "/jobs?state=failed&limit=500" + (cursor ? "&cursor=" + enc(cursor) : ""));
      jobs.push(...(page.jobs || []));
      if (!(cursor = page.nextCursor)) break;
    }
    return jobs;
  };
  const renderFailures = async (b) => {
    if ((b.failed || 0) === lastFailed) return;
    lastFailed = b.failed || 0;
    const jobs = await failed();
    const groups = new Map();
    for (const j of jobs) {
      const k = (j.errorStep || "?") + "\u0000" + summary(j.lastError);
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(j.deviceId);
    }
    fill(failures, groups.size ? h("table", {}, h("tr", {}, h("th", {}, "Step"), h("th", {}, "Reason"), h("th", {}, "Devices")),
      [...groups].map(([k, ids]) => h("tr", { class: "failed-row" }, h("td", {}, k.split("\u0000")[0]), h("td", {}, k.split("\u0000")[1]),
        h("td", {}, ids.length + ": ", ids.slice(0, 20).map((d) => [h("a", { href: "#/device/" + enc(d) }, d), " "]),
          ids.length > 20 ? "…" : "")))) : h("p", { class: "muted" }, "none"),
    jobs.length ? op("Retry the failed", () => startBatch({ kind: b.kind, deviceIds: jobs.map((j) => j.deviceId) }), { id: "retry-failed" }) : null);
  };
  let shown = "";
  const render = (b) => {
    // Unchanged state is not redrawn, so a button is not replaced under a
    // click.
    if (JSON.stringify(b) === shown) return;
    shown = JSON.stringify(b);
    fill(head, h("h1", {}, "Batch " + b.id + " — " + shortKind(b.kind)),
      h("p", { id: "batch-progress" }, progress(b)),
      h("p", { class: "muted" }, "started " + when(b.createdAt) + " by " + (b.requester || "?") + " (" + (b.origin || "") + ")"),
      (b.warnings || []).map((w) => h("p", { class: "muted" }, "warning: " + w)),
      b.done ? null : op("Cancel", async () => { if (confirm("Cancel the jobs not started yet?")) render(await api("POST", "batches/" + enc(b.id) + "/cancel")); }, { id: "batch-cancel" }));
    renderFailures(b).catch(showError);
  };
  render(await api("GET", "batches/" + enc(id)));
  state.onEvent.batches = async (msgs) => {
    const b = (msgs[0].batches || []).find((x) => x.id === id);
    render(b || await api("GET", "batches/" + enc(id)));
  };
  stream();
};

// ---- collections
pages.collections = async (main) => {
  const name = h("input", { placeholder: "name", id: "coll-name" });
  const desc = h("input", { placeholder: "description" });
  const auto = h("input", { type: "checkbox" });
  const table = h("table", { id: "collection-table" });
  const load = async () => {
    const list = await api("GET", "collections");
    fill(table, h("tr", {}, ["Name", "Description", "Members", "Rules", "Auto-provisioning", ""].map((t) => h("th", {}, t))),
      (list.collections || []).map((c) => h("tr", {}, h("td", {}, h("a", { href: "#/collection/" + enc(c.name), class: "collection-link" }, c.name)), h("td", {}, c.description),
        h("td", {}, h("a", { href: "#/devices?collection=" + enc(c.name) }, c.members || 0)),
        h("td", {}, (c.rules || []).map((r) => [r.subnet, r.namePattern].filter(Boolean).join(" ")).join("; ") || "—"),
        h("td", {}, c.autoProvision ? "on " : "off ",
          op(c.autoProvision ? "Turn off" : "Turn on", async () => { await api("PATCH", "collections/" + enc(c.name), { autoProvision: !c.autoProvision }); await load(); })),
        h("td", {}, op("Provision", () => startBatch({ kind: "JOB_KIND_PROVISION", collection: c.name })), " ",
          op("Delete", async () => { if (confirm("Delete collection " + c.name + "? Devices stay.")) { await api("DELETE", "collections/" + enc(c.name)); await load(); } })))));
  };
  main.append(h("h1", {}, "Collections"),
    h("form", { class: "inline" }, name, desc, h("label", {}, auto, " auto-provision"),
      op("Create", async () => { await api("POST", "collections", { name: name.value, description: desc.value, autoProvision: auto.checked }); await load(); })),
    table,
    h("p", { class: "muted" }, "A collection's page lists the members kept from auto-provisioning (suppressed)."));
  await load();
};

// ---- one collection: its fields and its suppressed members
pages.collection = async (main, name) => {
  const box = h("div", { id: "collection" });
  main.append(box);
  const load = async () => {
    const c = ((await api("GET", "collections")).collections || []).find((x) => x.name === name);
    if (!c) throw new Error("no collection " + name);
    const sup = [];
    let cursor = "";
    do { // every page: a collection rarely keeps many devices from sweeps
      const q = new URLSearchParams({ collection: name, suppressed: "true", limit: "500" });
      if (cursor) q.set("cursor", cursor);
      const page = await api("GET", "devices?" + q.toString());
      sup.push(...(page.devices || []));
      cursor = page.nextCursor;
    } while (cursor);
    fill(box, h("h1", {}, "Collection " + c.name),
      h("table", {}, [["Description", c.description || "—"], ["Members", h("a", { href: "#/devices?collection=" + enc(c.name) }, c.members || 0)],
        ["Rules", (c.rules || []).map((r) => [r.subnet, r.namePattern].filter(Boolean).join(" ")).join("; ") || "—"],
        ["Auto-provisioning", c.autoProvision ? "on" : "off"], ["Created", when(c.createdAt)]]
        .map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v)))),
      h("h2", {}, "Suppressed members (" + sup.length + ")"),
      h("p", { class: "muted" }, "Automatic provisioning leaves these alone although the collection has it on."),
      sup.length === 0 ? h("p", { id: "no-suppressed" }, "None.") :
        h("table", { id: "suppressed-table" }, h("tr", {}, ["Device", "FQDN", "Status", ""].map((t) => h("th", {}, t))),
          sup.map((d) => h("tr", {}, h("td", {}, h("a", { href: "#/device/" + enc(d.id) }, d.id)), h("td", {}, d.fqdn), h("td", {}, shortStatus(d.status)),
            h("td", {}, op("Allow auto-provisioning", async () => {
              await api("POST", "auto-provision/suppressed", { deviceIds: [d.id], suppressed: false }); await load();
            }))))));
  };
  await load();
};

// ---- agents
pages.agents = async (main) => {
  const table = h("table", { id: "agent-table" });
  const out = h("p", { id: "enroll-token" });
  const subnets = h("input", { placeholder: "subnets for a new agent" });
  const load = async () => {
    const list = await api("GET", "agents");
    fill(table, h("tr", {}, ["Agent", "Version", "Address", "Subnets", "Last heartbeat", "Online", "Jobs in flight", "Hellos received", "Enrolled", ""].map((t) => h("th", {}, t))),
      (list.agents || []).map((a) => {
        const sn = h("input", { placeholder: "subnet", size: 16 });
        return h("tr", {}, h("td", { title: a.id }, a.name || a.id), h("td", {}, a.version || "—"), h("td", {}, a.address || "—"),
          h("td", {}, (a.subnets || []).join(", ")), h("td", {}, when(a.lastHeartbeat)),
          h("td", { class: a.online ? "ok" : "error" }, a.online ? "online" : "offline"),
          h("td", {}, (a.jobsInFlight || 0) + " of " + (a.capacity || 0)), h("td", {}, a.hellosReceived || 0), h("td", {}, when(a.enrolledAt)),
          h("td", {}, sn,
            op("Authorise", async () => { await api("POST", "agents/" + enc(a.id) + "/authorize", { subnets: [sn.value] }); await load(); }), " ",
            op("Unauthorise", async () => { await api("POST", "agents/" + enc(a.id) + "/unauthorize", { subnets: [sn.value] }); await load(); }), " ",
            op("Revoke", async () => { if (confirm("Revoke agent " + a.id + "? Its certificate is refused from its next call.")) { await api("DELETE", "agents/" + enc(a.id)); await load(); } })));
      }));
  };
  main.append(h("h1", {}, "Agents"), table, h("h2", {}, "Enroll an agent"),
    h("form", { class: "inline" }, subnets,
      op("Create enrollment token", async () => {
        const r = await api("POST", "enrollment-tokens", { subnets: subnets.value.split(/[\s,]+/).filter(Boolean) });
        out.textContent = "One-time token (shown once): " + r.token + " — expires " + when(r.expiresAt);
      })), out);
  await load();
};

// ---- start
window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    login(document.getElementById("token").value.trim(), false);
  });
  document.getElementById("login-cert").addEventListener("click", () => login("", true));
  document.getElementById("logout").addEventListener("click", logout);
  if (state.token || state.cert) login(state.token, state.cert);
});
