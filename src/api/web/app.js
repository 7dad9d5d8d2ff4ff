// spoolmon's web page: the orders, one order, status. Reads the JSON API of the same server;
// no library, nothing from elsewhere. Each view sets <body data-ready="1"> when drawn (the
// browser tests wait for it), data-ready="error" when the API refused.
"use strict";

const main = document.getElementById("main");

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function ms(value) { return value === null || value === undefined ? "–" : value.toFixed(3) + " ms"; }
function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 120) return seconds + " s";
  if (seconds < 7200) return Math.round(seconds / 60) + " min";
  return Math.round(seconds / 3600) + " h";
}
function idPath(id) { return id.split("/").map(encodeURIComponent).join("/"); }
function graphUrl(id, params) { return "/graph/" + idPath(id) + ".png?" + new URLSearchParams(params); }
function done(state) { document.body.dataset.ready = state; }
function failed(error) {
  main.replaceChildren(el("p", { class: "error", id: "error" }, "cannot read the API: " + error.message));
  done("error");
}

async function ordersView() {
  const query = new URLSearchParams(location.search);
  const prefix = query.get("prefix") || "";
  const state = query.get("state") || "";
  const sort = query.get("sort") || "id";
  const limit = Math.min(Number(query.get("limit")) || 100, 1000);
  const offset = Math.max(Number(query.get("offset")) || 0, 0);
  // graphs=0: the table without its graphs (lighter for a slow link or a huge page).
  const graphs = query.get("graphs") !== "0";
  const params = new URLSearchParams({ sort, offset, limit });
  if (prefix) params.set("prefix", prefix);
  if (state) params.set("state", state);
  const list = await api("/api/v1/orders?" + params);
  const go = (changes) => {
    const next = new URLSearchParams({ prefix, state, sort, offset, limit, graphs: graphs ? "" : "0", ...changes });
    for (const [k, v] of [...next]) if (v === "" || (k === "offset" && v === "0")) next.delete(k);
    location.search = next.toString();
  };
  const filter = el("input", { id: "filter", type: "search", placeholder: "id prefix (dc1/)", value: prefix });
  filter.addEventListener("change", () => go({ prefix: filter.value, offset: 0 }));
  const stateSelect = el("select", { id: "state" },
    ...["", "active", "failing", "invalid", "unresolved"].map((s) => {
      const option = el("option", { value: s }, s || "any state");
      if (s === state) option.selected = true;
      return option;
    }));
  stateSelect.addEventListener("change", () => go({ state: stateSelect.value, offset: 0 }));
  const sortSelect = el("select", { id: "sort" },
    ...[["id", "by id"], ["loss", "most loss first"], ["median", "slowest first"], ["age", "oldest result first"]].map(([v, label]) => {
      const option = el("option", { value: v }, label);
      if (v === sort) option.selected = true;
      return option;
    }));
  sortSelect.addEventListener("change", () => go({ sort: sortSelect.value, offset: 0 }));
  const previous = el("button", { id: "previous" }, "← previous");
  previous.disabled = offset === 0;
  previous.addEventListener("click", () => go({ offset: Math.max(offset - limit, 0) }));
  const next = el("button", { id: "next" }, "next →");
  next.disabled = offset + limit >= list.total;
  next.addEventListener("click", () => go({ offset: offset + limit }));
  const shown = list.orders.length ? `${offset + 1}–${offset + list.orders.length}` : "0";
  const toggle = el("a", { id: "graphs", href: "#" }, graphs ? "without graphs" : "with graphs");
  toggle.addEventListener("click", (event) => { event.preventDefault(); go({ graphs: graphs ? "0" : "" }); });
  const rows = list.orders.map((order) => {
    const result = order.last_result;
    const lossRatio = result ? result.loss / Math.max(result.pings, 1) : null;
    return el("tr", { "data-id": order.id },
      el("td", {}, el("a", { href: "/order/" + idPath(order.id) }, order.id)),
      el("td", { class: "state-" + order.state }, order.state),
      el("td", {}, order.probe || ""),
      el("td", {}, order.target || ""),
      el("td", { class: "num loss" + (lossRatio > 0 ? " loss-bad" : "") },
        result ? `${result.loss}/${result.pings}` : "–"),
      el("td", { class: "num median" }, ms(result && result.median_ms)),
      el("td", { class: "num age" }, age(result && result.age)),
      graphs ? el("td", {}, result
        ? el("img", { class: "thumb", loading: "lazy", alt: "", src: graphUrl(order.id, { range: "3h", width: 150, height: 30, legend: 0 }) })
        : el("span", { class: "muted" }, order.reason || "not measured yet")) : null);
  });
  main.replaceChildren(
    el("div", { class: "controls" }, filter, stateSelect, sortSelect, previous, next,
      el("span", { id: "total" }, `${shown} of ${list.total} orders`), toggle),
    el("table", { id: "orders" },
      el("thead", {}, el("tr", {}, ...["order", "state", "probe", "target", "loss", "median", "age", ...(graphs ? ["last 3 h"] : [])].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows)));
  done("1");
}

async function orderView(id) {
  const report = await api("/api/v1/orders/" + idPath(id) + "?range=1h");
  const order = report.order || {};
  const result = report.last_result;
  const facts = el("dl", { class: "facts", id: "facts" },
    el("dt", {}, "state"), el("dd", { id: "order-state", class: "state-" + (order.state || "none") }, order.state || report.location),
    el("dt", {}, "probe"), el("dd", {}, `${order.probe || "–"} ${order.target || ""}, every ${order.step || "?"} s, ${order.pings || "?"} pings`),
    order.reason ? el("dt", {}, "reason") : null, order.reason ? el("dd", { class: "error" }, order.reason) : null,
    el("dt", {}, "last result"),
    el("dd", { id: "last-result" }, result
      ? `${new Date(result.updated * 1000).toISOString().replace(".000Z", "Z")} (${age(result.age)} ago): loss ${result.loss}/${result.pings}, median ${ms(result.median === null ? null : result.median * 1000)}, min ${ms(result.min === null ? null : result.min * 1000)}, max ${ms(result.max === null ? null : result.max * 1000)}`
      : (report.last_result_error || "not measured yet")));
  const graphs = el("div", { class: "graphs", id: "graphs" },
    ...["3h", "1d", "1w", "1y"].map((range) => el("figure", {},
      el("img", { class: "graph", "data-range": range, alt: `${id}, last ${range}`, src: graphUrl(id, { range }) }))));
  const steps = report.history ? el("table", { id: "history" },
    el("thead", {}, el("tr", {}, ...["time (UTC)", "loss", "median", "min", "max"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...report.history.rows.slice(-20).reverse().map((row) => el("tr", {},
      el("td", {}, new Date(row.start * 1000).toISOString().slice(11, 19)),
      el("td", { class: "num" }, row.loss === null ? "–" : row.loss.toFixed(1)),
      el("td", { class: "num" }, ms(row.median === null ? null : row.median * 1000)),
      el("td", { class: "num" }, ms(row.min === null ? null : row.min * 1000)),
      el("td", { class: "num" }, ms(row.max === null ? null : row.max * 1000))))))
    : el("p", { class: "muted" }, report.history_error || "no history");
  main.replaceChildren(el("h1", { id: "order-id" }, id), facts, graphs, el("h2", {}, "recent steps"), steps);
  done("1");
}

async function statusView() {
  const status = await api("/api/v1/status");
  const q = status.queue;
  const table = (id, heads, rows) => el("table", { id },
    el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows));
  main.replaceChildren(
    el("section", {}, el("h2", {}, "daemon"),
      el("p", { id: "daemon" }, status.daemon.running ? `running (pid ${status.daemon.pid})` : "not running")),
    el("section", {}, el("h2", {}, "queues"),
      table("queues", ["incoming", "oldest", "waiting for RRD flush", "failed"],
        [el("tr", {}, el("td", { class: "num" }, q.incoming), el("td", { class: "num" }, age(q.oldest_age_seconds)),
          el("td", { class: "num" }, q.waiting_for_rrd_flush), el("td", { class: "num" }, q.failed))])),
    el("section", {}, el("h2", {}, "sinks"),
      table("sinks", ["sink", "backlog lines", "oldest", "delivered", "dropped", "error"],
        status.sinks.map((s) => el("tr", { "data-sink": s.sink }, el("td", {}, s.sink), el("td", { class: "num" }, s.lines),
          el("td", { class: "num" }, age(s.oldest_age_seconds)), el("td", { class: "num" }, s.delivered_lines),
          el("td", { class: "num" }, s.dropped_lines), el("td", { class: "error" }, s.error || ""))))),
    el("section", {}, el("h2", {}, "nodes"),
      table("nodes", ["node", "machine", "silent for", "stale"],
        status.children.map((c) => el("tr", { "data-node": c.node }, el("td", {}, c.node), el("td", {}, c.machine),
          el("td", { class: "num" }, age(c.silent_seconds)), el("td", {}, c.stale_since ? "stale" : ""))))),
    el("section", {}, el("h2", {}, "last errors"),
      table("errors", ["part", "age", "message"],
        status.last_errors.map((e) => el("tr", {}, el("td", {}, e.source), el("td", { class: "num" }, age(e.age_seconds)),
          el("td", { class: "error" }, e.message))))));
  done("1");
}

function route() {
  const path = location.pathname;
  if (path.startsWith("/order/")) {
    return orderView(path.slice("/order/".length).split("/").map(decodeURIComponent).join("/"));
  }
  if (path === "/status") return statusView();
  return ordersView();
}

route().catch(failed);
