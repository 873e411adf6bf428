// fibmesh live page: renders the controller's snapshots (/api/mesh/events,
// one JSON document every couple of seconds) as a graph of the mesh, the
// control plane and each node's fast path. No library: SVG by hand.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const history = { rps: [], nodes: {} };
  const HISTORY = 60;
  let last = null;
  let layoutKey = "";
  let received = 0;

  // ---- formatting ----
  function num(v, digits) {
    if (v === undefined || v === null || isNaN(v)) return "–";
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(digits === undefined ? 1 : digits);
    return v.toFixed(digits === undefined ? 2 : digits);
  }
  function pct(v) { return v === undefined || v === null ? "–" : (v * 100).toFixed(v > 0 && v < 0.01 ? 2 : 1) + "%"; }
  function bytes(v) {
    if (!v) return "0 B/s";
    const u = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return v.toFixed(v >= 100 ? 0 : 1) + " " + u[i] + "/s";
  }
  function msText(v) { return v === undefined || v === null ? "–" : (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + " ms"; }
  function ago(t) {
    if (!t) return "–";
    const s = (Date.now() - new Date(t).getTime()) / 1000;
    if (s < 1) return "just now";
    if (s < 90) return s.toFixed(0) + " s ago";
    if (s < 5400) return (s / 60).toFixed(0) + " min ago";
    return (s / 3600).toFixed(1) + " h ago";
  }
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function sel(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function health(e) {
    if (!e.rps) return "idle";
    if (e.errorRate >= 0.05) return "bad";
    if (e.errorRate >= 0.01) return "warn";
    return "ok";
  }
  const palette = ["#38bdf8", "#f472b6", "#facc15", "#4ade80", "#fb923c", "#a78bfa", "#2dd4bf", "#f87171"];
  function nodeColor(name, nodes) {
    const i = nodes.indexOf(name);
    return palette[(i < 0 ? 0 : i) % palette.length];
  }

  // ---- graph layout: layers by longest path, ordered by barycentre ----
  function layout(vertices, edges) {
    const ids = vertices.map((v) => v.id);
    const rank = {};
    ids.forEach((id) => { rank[id] = 0; });
    for (let i = 0; i < ids.length; i++) {
      let changed = false;
      for (const e of edges) {
        if (e.from === e.to || rank[e.from] === undefined || rank[e.to] === undefined) continue;
        if (rank[e.to] < rank[e.from] + 1 && rank[e.from] + 1 < ids.length) { rank[e.to] = rank[e.from] + 1; changed = true; }
      }
      if (!changed) break;
    }
    // What nothing points to (a caller, a service nobody calls) sits one
    // layer before the nearest thing it points to, so that its edges do
    // not run across other layers' boxes.
    for (const v of vertices) {
      const outs = edges.filter((e) => e.from === v.id && e.to !== v.id).map((e) => rank[e.to]);
      const ins = edges.filter((e) => e.to === v.id && e.from !== v.id);
      if (ins.length === 0 && outs.length) rank[v.id] = Math.max(0, Math.min(...outs) - 1);
    }
    const layers = [];
    for (const v of vertices) (layers[rank[v.id]] = layers[rank[v.id]] || []).push(v);
    for (let i = 0; i < layers.length; i++) layers[i] = layers[i] || [];
    layers.forEach((l) => l.sort((a, b) => (a.namespace + a.name).localeCompare(b.namespace + b.name)));
    const pos = {};
    const place = () => layers.forEach((l) => l.forEach((v, i) => { pos[v.id] = i; }));
    place();
    for (let pass = 0; pass < 4; pass++) {
      for (let r = 1; r < layers.length; r++) {
        const bc = {};
        for (const v of layers[r]) {
          const ns = edges.filter((e) => e.to === v.id && rank[e.from] < r).map((e) => pos[e.from]);
          bc[v.id] = ns.length ? ns.reduce((a, b) => a + b, 0) / ns.length : pos[v.id];
        }
        layers[r].sort((a, b) => bc[a.id] - bc[b.id]);
        place();
      }
    }
    const W = 190, H = 46, GX = 210, GY = 30, M = 16;
    const tallest = Math.max(1, ...layers.map((l) => l.length));
    const height = M * 2 + tallest * H + (tallest - 1) * GY;
    const xy = {};
    layers.forEach((l, r) => {
      const span = l.length * H + (l.length - 1) * GY;
      const top = (height - span) / 2;
      l.forEach((v, i) => { xy[v.id] = { x: M + r * (W + GX), y: top + i * (H + GY), w: W, h: H }; });
    });
    return { xy, width: M * 2 + layers.length * W + (layers.length - 1) * GX, height };
  }

  function visible(s) {
    const ns = $("ns-filter").value;
    const hideIdle = $("hide-idle").checked;
    let edges = s.graph.edges;
    if (hideIdle) edges = edges.filter((e) => e.rps > 0 || e.bytesPerSecond > 0);
    const touched = new Set();
    edges.forEach((e) => { touched.add(e.from); touched.add(e.to); });
    let vertices = s.graph.vertices.filter((v) => !hideIdle || touched.has(v.id));
    if (ns) {
      const keep = new Set(vertices.filter((v) => v.namespace === ns).map((v) => v.id));
      // keep the other ends of the namespace's edges
      edges = edges.filter((e) => keep.has(e.from) || keep.has(e.to));
      edges.forEach((e) => { keep.add(e.from); keep.add(e.to); });
      vertices = vertices.filter((v) => keep.has(v.id));
    }
    const ids = new Set(vertices.map((v) => v.id));
    edges = edges.filter((e) => ids.has(e.from) && ids.has(e.to));
    return { vertices, edges };
  }

  function edgeLabel(e) {
    if (!e.observed) return "";
    const parts = [];
    if (e.protocols && e.protocols.includes("http")) {
      parts.push(num(e.rps) + " rps");
      if (e.rps > 0) parts.push(pct(e.errorRate) + " err");
    }
    if (e.protocols && e.protocols.includes("tcp")) parts.push(bytes(e.bytesPerSecond));
    return parts.join(" · ");
  }

  function edgeSecond(e) {
    if (!e.observed) return "";
    const parts = [];
    if (e.p99Ms !== undefined) parts.push("p99 " + msText(e.p99Ms));
    if (e.mtls === "mutual_tls") parts.push("mTLS");
    else if (e.mtls === "none") parts.push("plaintext");
    else if (e.mtls === "mixed") parts.push("mTLS + plaintext");
    if (e.protocols && e.protocols.includes("tcp") && e.offload) parts.push(offloadText(e));
    return parts.join(" · ");
  }

  // offloadText is a TCP edge's offload state: its tunnel connections
  // open now by mode ("splice 3, userspace 1"), else the mode they had.
  function offloadText(e) {
    const c = e.offloadConnections || {};
    const modes = Object.keys(c).sort();
    if (modes.length) return modes.map((m) => m + " " + num(c[m], 0)).join(", ");
    return e.offload;
  }

  function edgeTip(e) {
    const lines = [e.from + " → " + e.to];
    lines.push("requests/s  " + num(e.rps));
    if (e.codes) lines.push("codes       " + Object.keys(e.codes).sort().map((k) => k + " " + num(e.codes[k])).join(", "));
    lines.push("errors      " + pct(e.errorRate));
    lines.push("p99         " + msText(e.p99Ms));
    lines.push("mTLS        " + e.mtls);
    lines.push("offload     " + (e.offload ? offloadText(e) : "–"));
    if (e.bytesPerSecond) lines.push("TCP         " + bytes(e.bytesPerSecond) + ", " + num(e.connectionsPerSecond) + " conn/s");
    lines.push("reporter    " + (e.reporter || "model only"));
    return lines.join("\n");
  }

  function vertexTip(v) {
    const lines = [v.kind + " " + (v.namespace ? v.namespace + "/" : "") + v.name];
    if (v.hostname) lines.push("host     " + v.hostname);
    if (v.nodes) lines.push("nodes    " + v.nodes.join(", "));
    if (v.pods) lines.push("pods     " + v.pods);
    if (v.mtls) lines.push("mTLS     " + v.mtls);
    if (v.outsideMesh) lines.push("outside the mesh");
    if (!v.inModel) lines.push("(seen in metrics only)");
    lines.push("in/out   " + num(v.rpsIn) + " / " + num(v.rpsOut) + " rps");
    return lines.join("\n");
  }

  function tip(target, text) {
    const t = $("tip");
    target.addEventListener("mousemove", (ev) => {
      const box = $("graph-wrap").getBoundingClientRect();
      t.textContent = typeof text === "function" ? text() : text;
      t.hidden = false;
      t.style.left = (ev.clientX - box.left + 14 + $("graph-wrap").scrollLeft) + "px";
      t.style.top = (ev.clientY - box.top + 10 + $("graph-wrap").scrollTop) + "px";
    });
    target.addEventListener("mouseleave", () => { t.hidden = true; });
  }

  const current = { edges: {}, vertices: {} };

  function renderGraph(s) {
    const svg = $("graph");
    const { vertices, edges } = visible(s);
    const key = vertices.map((v) => v.id).join("|") + "#" + edges.map((e) => e.from + ">" + e.to).join("|");
    const allNodes = s.nodes.map((n) => n.name);
    if (key !== layoutKey) {
      layoutKey = key;
      while (svg.firstChild) svg.removeChild(svg.firstChild);
      current.edges = {}; current.vertices = {};
      if (vertices.length === 0) {
        svg.setAttribute("viewBox", "0 0 400 60");
        svg.appendChild(sel("text", { x: 10, y: 30, fill: "#94a3b8" }, "no services or workloads in the model yet"));
        return;
      }
      const L = layout(vertices, edges);
      svg.setAttribute("viewBox", "0 0 " + L.width + " " + L.height);
      svg.style.height = Math.max(200, Math.min(L.height, 1400)) + "px";
      svg.style.minWidth = Math.min(L.width, 2400) * 0.6 + "px";
      const ge = sel("g", { class: "edges" }), gv = sel("g", { class: "vertices" });
      svg.appendChild(ge); svg.appendChild(gv);
      for (const e of edges) {
        const a = L.xy[e.from], b = L.xy[e.to];
        let d;
        if (e.from === e.to) {
          d = `M${a.x + a.w - 20},${a.y} c 0,-30 40,-30 20,0`;
        } else {
          const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2;
          const mx = (x1 + x2) / 2;
          d = `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
        }
        const g = sel("g", { class: "e", "data-from": e.from, "data-to": e.to });
        const line = sel("path", { class: "line", d });
        const flow = sel("path", { class: "flow", d });
        const hit = sel("path", { class: "hit", d });
        g.append(line, flow, hit);
        ge.appendChild(g);
        // The label goes toward the end that fewer edges share, where
        // it does not sit on its neighbours' labels.
        let lx = a.x + a.w, ly = a.y - 26;
        if (e.from !== e.to) {
          const outs = edges.filter((x) => x.from === e.from).length, ins = edges.filter((x) => x.to === e.to).length;
          const len = line.getTotalLength();
          const pt = line.getPointAtLength(len * (ins > outs ? 0.3 : outs > ins ? 0.7 : 0.5));
          lx = pt.x; ly = pt.y - 6;
        }
        const label = sel("text", { x: lx, y: ly, "text-anchor": "middle" });
        const sec = sel("text", { x: lx, y: ly + 12, "text-anchor": "middle", class: "sec" });
        g.append(label, sec);
        const k = e.from + ">" + e.to;
        current.edges[k] = { g, line, flow, label, sec, data: e };
        tip(g, () => edgeTip(current.edges[k].data));
      }
      for (const v of vertices) {
        const p = L.xy[v.id];
        const g = sel("g", { class: "v " + v.kind + (v.inModel || v.kind === "unknown" ? "" : " ghost"), "data-vertex-id": v.id, transform: `translate(${p.x},${p.y})` });
        g.appendChild(sel("rect", { width: p.w, height: p.h, rx: v.kind === "service" ? 18 : 5 }));
        if (v.kind === "workload" && v.nodes) {
          const sw = p.h / v.nodes.length;
          v.nodes.forEach((n, i) => g.appendChild(sel("rect", { class: "strip", x: 0, y: i * sw, width: 5, height: sw, fill: nodeColor(n, allNodes) })));
        }
        g.appendChild(sel("text", { x: 12, y: 19, class: "name" }, v.kind === "service" ? v.name : v.name));
        const sub = v.kind === "service" ? (v.namespace ? v.namespace + (v.external ? " · external" : "") : v.hostname || "")
          : v.kind === "workload" ? [v.namespace, v.version, (v.nodes || []).join(",")].filter(Boolean).join(" · ") : "outside the mesh";
        const subText = sel("text", { x: 12, y: 35, class: "sub" }, sub);
        g.appendChild(subText);
        gv.appendChild(g);
        current.vertices[v.id] = { g, subText, data: v };
        tip(g, () => vertexTip(current.vertices[v.id].data));
      }
    }
    const maxRPS = Math.max(1, ...edges.map((e) => e.rps));
    for (const e of edges) {
      const c = current.edges[e.from + ">" + e.to];
      if (!c) continue;
      c.data = e;
      c.g.setAttribute("class", "e " + health(e) + (e.observed ? "" : " unobserved"));
      const w = e.rps > 0 ? 1.5 + 5 * Math.log1p(e.rps) / Math.log1p(maxRPS) : (e.bytesPerSecond > 0 ? 2 : 1);
      c.line.setAttribute("stroke-width", w.toFixed(2));
      const moving = e.rps > 0 || e.bytesPerSecond > 0;
      c.flow.style.display = moving ? "" : "none";
      if (moving) c.flow.style.animationDuration = Math.max(0.25, 2 / Math.log2(2 + e.rps)).toFixed(2) + "s";
      c.label.textContent = edgeLabel(e);
      c.sec.textContent = edgeSecond(e);
      c.sec.setAttribute("class", e.mtls === "mutual_tls" ? "mtls" : e.mtls === "none" || e.mtls === "mixed" ? "plain" : "");
    }
    for (const v of vertices) {
      const c = current.vertices[v.id];
      if (c) c.data = v;
    }
  }

  function renderEdgesTable(s) {
    const { vertices, edges } = visible(s);
    const name = {};
    vertices.forEach((v) => { name[v.id] = (v.kind === "service" ? "svc " : "") + (v.namespace ? v.namespace + "/" : "") + v.name; });
    const tb = $("edges").tBodies[0];
    const rows = edges.filter((e) => e.observed).sort((a, b) => b.rps - a.rps || (b.bytesPerSecond || 0) - (a.bytesPerSecond || 0));
    tb.replaceChildren(...rows.map((e) => {
      const tr = el("tr", { "data-from": e.from, "data-to": e.to });
      tr.append(el("td", {}, name[e.from] || e.from), el("td", {}, name[e.to] || e.to),
        el("td", { class: "num rps" }, num(e.rps)), el("td", { class: "num" }, pct(e.errorRate)),
        el("td", { class: "num" }, msText(e.p99Ms)), el("td", {}, e.mtls), el("td", {}, e.offload ? offloadText(e) : "–"),
        el("td", { class: "num" }, e.bytesPerSecond ? bytes(e.bytesPerSecond) : "–"));
      return tr;
    }));
    if (!rows.length) {
      const tr = el("tr");
      tr.appendChild(el("td", { colspan: 8, class: "dim" }, "no traffic seen yet"));
      tb.appendChild(tr);
    }
  }

  function renderControl(s) {
    const cp = s.controlPlane;
    const dl = $("cp");
    const kv = [
      ["connected agents", cp.connectedAgents + " of " + cp.agents.length + " seen"],
      ["model version", String(cp.modelVersion || "–")],
      ["last push", cp.lastPush ? "v" + cp.lastPush.version + ", " + ago(cp.lastPush.at) + ", took " + msText(cp.lastPush.tookMs) + (cp.lastPush.error ? " FAILED: " + cp.lastPush.error : "") : "none since start"],
      ["pushes", num(cp.pushes, 0)],
      ["push p99", msText(cp.pushP99Ms)],
      ["convergence p99", msText(cp.convergenceP99Ms) + " since start"],
      ["", msText(cp.convergenceWindowP99Ms) + " last " + cp.convergenceWindow],
      ["NACKs", num(cp.nacks, 0) + (cp.nacks ? " (" + Object.keys(cp.nacksByType || {}).filter((k) => cp.nacksByType[k]).map((k) => k + " " + cp.nacksByType[k]).join(", ") + ")" : "")],
      ["CSRs", num(cp.csrsIssued, 0) + " issued, " + num(cp.csrsRefused, 0) + " refused"],
    ];
    dl.replaceChildren(...kv.flatMap(([k, v]) => {
      const dd = el("dd", {}, v);
      if (k === "NACKs" && cp.nacks > 0) dd.className = "err";
      return [el("dt", {}, k), dd];
    }));
    const tb = $("agents").tBodies[0];
    tb.replaceChildren(...cp.agents.map((a) => {
      const tr = el("tr", { "data-node": a.node });
      tr.append(el("td", {}, a.node + (a.inModel ? "" : " (not a node)")),
        el("td", {}, a.connected ? "connected" : "gone"),
        el("td", {}, a.synced ? "yes" : "no"),
        el("td", { class: "num" + (a.nacks ? " err" : ""), title: a.lastNack || "" }, String(a.nacks)),
        el("td", { class: "num" }, a.lastConvergenceMs ? msText(a.lastConvergenceMs) : "–"));
      return tr;
    }));
  }

  function spark(svg, values) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    if (values.length < 2) return;
    const max = Math.max(1e-9, ...values);
    const pts = values.map((v, i) => (i * 120 / (HISTORY - 1)).toFixed(1) + "," + (23 - 22 * v / max).toFixed(1)).join(" ");
    svg.appendChild(sel("polyline", { points: pts }));
  }

  function bars(rows) {
    const box = el("div", { class: "bars" });
    const max = Math.max(1e-9, ...rows.map((r) => r[1]));
    for (const [name, v, cls] of rows) {
      const track = el("div", { class: "track" });
      const fill = el("div", { class: "fill " + (cls || "") });
      fill.style.width = (100 * v / max).toFixed(1) + "%";
      track.appendChild(fill);
      box.append(el("span", { class: "name" }, name), track, el("span", { class: "num" }, num(v) + " pps"));
    }
    return box;
  }

  function renderNodes(s) {
    const cards = $("node-cards");
    cards.replaceChildren(...s.nodes.map((n) => {
      const h = (history.nodes[n.name] = history.nodes[n.name] || []);
      h.push(n.xdpPps ? n.xdpPps.rx || 0 : 0);
      if (h.length > HISTORY) h.shift();
      const c = el("div", { class: "card", "data-node": n.name });
      const h3 = el("h3", {}, n.name);
      h3.appendChild(el("span", { class: "state " + n.state }, n.state));
      h3.appendChild(el("span", { class: "dim" }, (n.xdsConnected ? "xDS connected" : "xDS not connected") + (n.state === "up" ? (n.ready ? " · ready" : " · not ready") : "")));
      c.appendChild(h3);
      if (n.error) c.appendChild(el("div", { class: "err" }, n.error));
      if (n.state !== "up") {
        c.appendChild(el("div", { class: "dim" }, n.state === "no-agent" ? "no agent has connected for this node" : n.state === "no-address" ? "the node has no InternalIP to scrape" : n.state === "not-scraped" ? "agents are not scraped (--live-agent-port 0)" : "last seen " + ago(n.lastScrape)));
        return c;
      }
      const x = n.xdpPps || {};
      c.appendChild(el("div", { class: "dim" }, "XDP packets/s by action"));
      const sp = sel("svg", { class: "spark", viewBox: "0 0 120 24", preserveAspectRatio: "none" });
      spark(sp, h);
      c.appendChild(sp);
      c.appendChild(bars([["rx", x.rx || 0], ["redirect", x.redirect || 0, "redirect"], ["tx", x.tx || 0], ["pass", x.pass || 0, "pass"], ["drop", x.drop || 0, "drop"], ["punt", x.punt || 0, "punt"]]));
      const off = n.offloadedConnections || {};
      const offTotal = Object.values(off).reduce((a, b) => a + b, 0);
      const kv = el("dl", { class: "kv" });
      const row = (k, v) => kv.append(el("dt", {}, k), el("dd", {}, v));
      row("offloaded conns", num(offTotal, 0) + (offTotal ? " (" + Object.keys(off).filter((k) => off[k]).map((k) => k + " " + off[k]).join(", ") + ")" : ""));
      row("offload flows", num(n.offloadFlows, 0) + " holding XDP entries");
      row("offloaded bytes", bytes(n.offloadedBytesPerSecond));
      row("punts", num(n.puntPps) + " pps" + (n.puntDropPps ? ", " + num(n.puntDropPps) + " pps dropped (no socket)" : ""));
      row("flow table", num(n.flowEntries, 0) + " entries");
      row("slow path", num(n.rps) + " req/s, " + num(n.activeConnections, 0) + " conns, " + bytes(n.bytesPerSecond));
      row("workloads", String(n.workloads));
      row("scrape", msText(n.scrapeMs));
      c.appendChild(kv);
      return c;
    }));
  }

  function renderNamespaces(s) {
    const select = $("ns-filter");
    const have = new Set([...select.options].map((o) => o.value));
    const nss = [...new Set(s.graph.vertices.map((v) => v.namespace).filter(Boolean))].sort();
    for (const ns of nss) if (!have.has(ns)) select.appendChild(el("option", { value: ns }, ns));
  }

  function redraw() {
    if (!last) return;
    renderGraph(last);
    renderEdgesTable(last);
  }

  function render(s) {
    last = s;
    received++;
    document.body.dataset.snapshots = String(received);
    const t = s.totals;
    history.rps.push(t.rps);
    if (history.rps.length > HISTORY) history.rps.shift();
    $("total-rps").textContent = num(t.rps);
    $("total-rps").dataset.value = String(t.rps);
    $("total-errors").textContent = pct(t.errorRate);
    $("total-services").textContent = String(t.services);
    $("total-workloads").textContent = String(t.workloads);
    $("total-agents").textContent = t.agentsUp + (t.agentsDown ? " (" + t.agentsDown + " down)" : "");
    $("model-version").textContent = String(s.controlPlane.modelVersion || "–");
    spark($("spark-rps"), history.rps);
    renderNamespaces(s);
    redraw();
    renderControl(s);
    renderNodes(s);
    $("foot").textContent = "snapshot " + new Date(s.time).toLocaleTimeString() + " · every " + s.intervalSeconds + " s" + (s.ratesReady ? "" : " · rates after the next scrape") + " · JSON at /api/mesh";
  }

  function connect() {
    const conn = $("conn");
    const es = new EventSource("/api/mesh/events");
    es.onopen = () => { conn.textContent = "live"; conn.className = "conn live"; };
    es.onmessage = (ev) => {
      let s;
      try { s = JSON.parse(ev.data); } catch (e) { conn.textContent = "bad snapshot"; conn.className = "conn lost"; return; }
      if (s.error) { conn.textContent = s.error; conn.className = "conn lost"; return; }
      conn.textContent = "live"; conn.className = "conn live";
      render(s);
    };
    es.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn lost"; };
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("ns-filter").addEventListener("change", () => { layoutKey = ""; redraw(); });
    $("hide-idle").addEventListener("change", () => { layoutKey = ""; redraw(); });
    connect();
  });
})();
