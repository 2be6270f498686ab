// The topology page: the graph of what this token can see, drawn as SVG,
// refreshed every few seconds. Nodes are keyboard focusable (Tab, arrow
// keys, Enter); the same content is offered as a text list.

import { announce, clear, clock, h, s } from "./dom.js";
import { SIZE, buildGraph, layout, statusClass } from "./graph.js";
import { Poller, loadSnapshot } from "./state.js";

const KIND_NAMES = {
  external: "external network",
  network: "network",
  router: "router",
  fip: "floating IP",
  port: "port",
  lb: "load balancer",
  member: "LB member",
};

function fit(text, max) {
  const value = String(text ?? "");
  return value.length > max ? `${value.slice(0, max - 1)}…` : value;
}

function edgePath(a, b, sameRow) {
  const { w, h, arc } = SIZE;
  const x1 = a.x + w / 2;
  const x2 = b.x + w / 2;
  if (sameRow) {
    const y = a.y + h;
    return `M${x1},${y} C${x1},${y + arc} ${x2},${y + arc} ${x2},${y}`;
  }
  const [top, bottom] = a.y < b.y ? [a, b] : [b, a];
  const xt = top === a ? x1 : x2;
  const xb = top === a ? x2 : x1;
  const y1 = top.y + h;
  const y2 = bottom.y;
  const mid = (y1 + y2) / 2;
  return `M${xt},${y1} C${xt},${mid} ${xb},${mid} ${xb},${y2}`;
}

function nodeLabel(node) {
  const where = node.host ? `, on host ${node.host}` : "";
  return `${KIND_NAMES[node.kind]} ${node.name}, ${node.sub}, status ${node.status}${where}`;
}

function drawNode(node, pos) {
  const { w, h } = SIZE;
  const cls = statusClass(node.status);
  return s(
    "g",
    {
      class: `node kind-${node.kind} st-${cls}`,
      transform: `translate(${pos.x},${pos.y})`,
      tabindex: "0",
      role: "button",
      "aria-label": nodeLabel(node),
      "data-id": node.id,
      "data-kind": node.kind,
      "data-name": node.name,
      "data-status": node.status,
    },
    s("title", {}, nodeLabel(node)),
    s("rect", { class: "box", width: w, height: h, rx: 8 }),
    s("rect", { class: "bar", width: 6, height: h, rx: 3 }),
    s("text", { class: "kind", x: 14, y: 15 }, KIND_NAMES[node.kind].toUpperCase()),
    s("text", { class: "state", x: w - 8, y: 15, "text-anchor": "end" }, fit(node.status, 10)),
    s("text", { class: "name", x: 14, y: 33 }, fit(node.name, 19)),
    s("text", { class: "sub", x: 14, y: 47 }, fit(node.sub, 26)),
  );
}

function drawEdge(edge, from, to, sameRow) {
  const cls = ["edge", `e-${edge.kind}`, edge.status ? `st-${statusClass(edge.status)}` : ""];
  const path = s("path", { class: cls.join(" "), d: edgePath(from, to, sameRow), "data-from": edge.from, "data-to": edge.to });
  if (!edge.label || !["interface", "gateway", "member"].includes(edge.kind)) return [path];
  const { w, h, arc } = SIZE;
  const x = (from.x + to.x) / 2 + w / 2;
  const y = sameRow ? from.y + h + arc * 0.75 + 12 : (from.y + h + to.y) / 2;
  return [path, s("text", { class: "elabel", x, y, "text-anchor": "middle" }, edge.label + (edge.status ? ` ${edge.status}` : ""))];
}

function drawGroups(boxes) {
  return boxes.map((box) =>
    s("g", { class: `host st-${statusClass(box.status)}`, "data-host": box.name, "data-status": box.status },
      s("rect", { x: box.x, y: box.y, width: box.width, height: box.height, rx: 10 }),
      s("text", { x: box.x + 10, y: box.y + 15 }, `host ${fit(box.name, 16)} · ${box.status}`),
      box.empty ? s("text", { class: "sub", x: box.x + 10, y: box.y + 45 }, "no port bound") : null),
  );
}

/** The whole SVG for a graph. */
export function drawGraph(graph) {
  const geo = layout(graph);
  const rowOf = new Map();
  geo.rows.forEach((ids, i) => ids.forEach((id) => rowOf.set(id, i)));
  const edges = graph.edges.flatMap((e) =>
    drawEdge(e, geo.positions.get(e.from), geo.positions.get(e.to), rowOf.get(e.from) === rowOf.get(e.to)));
  const order = geo.rows.flat();
  const nodesById = new Map(graph.nodes.map((n) => [n.id, n]));
  const svg = s(
    "svg",
    {
      class: "topology",
      viewBox: `0 0 ${geo.width} ${geo.height}`,
      width: geo.width,
      height: geo.height,
      role: "group",
      "aria-label": `Topology: ${graph.nodes.length} objects. Tab to a node, arrow keys move, Enter shows details.`,
    },
    s("g", { class: "groups" }, drawGroups(geo.boxes)),
    s("g", { class: "edges" }, edges),
    s("g", { class: "nodes" }, order.map((id) => drawNode(nodesById.get(id), geo.positions.get(id)))),
  );
  return { svg, geo };
}

function textList(graph) {
  const names = new Map(graph.nodes.map((n) => [n.id, `${KIND_NAMES[n.kind]} ${n.name}`]));
  return h("ul", {}, graph.nodes.map((node) => {
    const links = graph.edges.filter((e) => e.from === node.id || e.to === node.id)
      .map((e) => names.get(e.from === node.id ? e.to : e.from));
    const host = node.host ? `, host ${node.host}` : "";
    return h("li", {}, `${names.get(node.id)} (${node.sub}; ${node.status}${host})`,
      links.length ? ` — linked to ${links.join(", ")}` : "");
  }), graph.groups.map((g) => h("li", {}, `host ${g.name}: ${g.status}`)));
}

function details(node, graph) {
  if (!node) return [h("h2", {}, "Details"), h("p", { class: "hint" }, "Select a node (click, or Tab and Enter) to see its details.")];
  const names = new Map(graph.nodes.map((n) => [n.id, n.name]));
  const links = graph.edges.filter((e) => e.from === node.id || e.to === node.id)
    .map((e) => `${names.get(e.from === node.id ? e.to : e.from)}${e.label ? ` (${e.label})` : ""}`);
  const facts = { Status: node.status, Addresses: node.sub, ...node.info, "Linked to": links.join(", ") || "nothing", ID: node.id };
  return [
    h("h2", {}, `${KIND_NAMES[node.kind]} ${node.name}`),
    h("dl", { class: "attrs" }, Object.entries(facts).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
    h("p", {},
      h("a", { href: `#/${node.route}/${node.routeId || node.id}` }, `Open ${KIND_NAMES[node.kind]} page`),
      node.kind === "port" ? [" · ", h("a", { href: `#/trace?port=${node.id}` }, "Trace from this port")] : null),
  ];
}

function nearest(nodes, from, dx, dy) {
  const rect = (el) => el.getBoundingClientRect();
  const a = rect(from);
  let best = null;
  let bestScore = Infinity;
  for (const el of nodes) {
    if (el === from) continue;
    const b = rect(el);
    const ddx = b.x - a.x;
    const ddy = b.y - a.y;
    const ok = dx ? Math.abs(ddy) < 2 && Math.sign(ddx) === dx : Math.sign(ddy) === dy && Math.abs(ddy) > 2;
    if (!ok) continue;
    const score = dx ? Math.abs(ddx) : Math.abs(ddy) * 10 + Math.abs(ddx);
    if (score < bestScore) [best, bestScore] = [el, score];
  }
  return best;
}

const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

export async function topologyView(root, session) {
  const updated = h("span", { id: "topo-updated" }, "loading…");
  const pause = h("button", { type: "button", class: "secondary small", "aria-pressed": "false" }, "Pause live updates");
  const fitBox = h("input", { type: "checkbox", id: "topo-fit" });
  const problem = h("p", { class: "form-error", role: "alert", hidden: true });
  const canvas = h("div", { class: "topo-canvas", id: "topo-canvas" });
  const panel = h("aside", { class: "topo-details", "aria-live": "polite", "aria-label": "Selected object" });
  const text = h("div", {});
  const legend = h("ul", { class: "legend", "aria-label": "Status colours" },
    ["up", "down", "pending", "unknown"].map((st) =>
      h("li", {}, h("span", { class: `swatch st-${st}`, "aria-hidden": "true" }), { up: "active / online / host up", down: "down / offline", pending: "building / lagging", unknown: "no monitor / unknown" }[st])));
  root.append(
    h("h1", { tabindex: "-1" }, "Topology"),
    h("p", { class: "toolbar" }, h("span", { class: "live", "aria-live": "off" }, "Live, every 3 s — ", updated), " ", pause, " ",
      h("label", { for: "topo-fit", class: "inline" }, fitBox, " Fit to width")),
    problem,
    h("div", { class: "topo-layout" }, canvas, panel),
    legend,
    h("details", { class: "topo-text" }, h("summary", {}, "Topology as text"), text),
  );
  let graph = null;
  let selected = null;
  let signature = "";

  function select(id, announceIt) {
    selected = graph.nodes.find((n) => n.id === id) || null;
    for (const el of canvas.querySelectorAll(".node")) el.classList.toggle("selected", el.dataset.id === id);
    for (const el of canvas.querySelectorAll(".edge")) {
      el.classList.toggle("hl", Boolean(id) && (el.dataset.from === id || el.dataset.to === id));
    }
    clear(panel).append(...details(selected, graph));
    if (announceIt && selected) announce(`${KIND_NAMES[selected.kind]} ${selected.name} selected`);
  }

  function render(snap) {
    updated.textContent = `updated ${clock()}`;
    problem.hidden = true;
    const next = buildGraph(snap, { admin: session.admin, now: snap.now });
    const sig = JSON.stringify(next);
    if (sig === signature) return;
    signature = sig;
    graph = next;
    const focused = document.activeElement?.closest?.(".node")?.dataset.id;
    const { svg } = drawGraph(graph);
    const first = !canvas.firstChild;
    clear(canvas).append(graph.nodes.length ? svg : h("p", { class: "empty" }, "Nothing to show yet: create a network."));
    if (first && !fitChosen) {
      // Shrink a wide graph to the pane while its text stays legible (at least
      // 60 %); narrower screens scroll instead, starting at the middle.
      const width = Number(svg.getAttribute("width"));
      fitBox.checked = width > canvas.clientWidth && width * 0.6 <= canvas.clientWidth;
      canvas.classList.toggle("fit", fitBox.checked);
      canvas.scrollLeft = (canvas.scrollWidth - canvas.clientWidth) / 2;
    }
    clear(text).append(textList(graph));
    select(selected && graph.nodes.some((n) => n.id === selected.id) ? selected.id : null, false);
    if (focused) canvas.querySelector(`.node[data-id="${CSS.escape(focused)}"]`)?.focus();
  }

  canvas.addEventListener("click", (event) => {
    const node = event.target.closest(".node");
    select(node ? node.dataset.id : null, true);
  });
  canvas.addEventListener("keydown", (event) => {
    const node = event.target.closest(".node");
    if (!node) return;
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      select(node.dataset.id, true);
    } else if (event.key === "Escape") {
      select(null, false);
    } else if (ARROWS[event.key]) {
      event.preventDefault();
      const [dx, dy] = ARROWS[event.key];
      nearest([...canvas.querySelectorAll(".node")], node, dx, dy)?.focus();
    }
  });
  let fitChosen = false;
  fitBox.addEventListener("change", () => {
    fitChosen = true;
    canvas.classList.toggle("fit", fitBox.checked);
  });

  const poller = new Poller(loadSnapshot, render, (err) => {
    problem.textContent = `Live update failed: ${err.message} (retrying).`;
    problem.hidden = false;
  });
  pause.addEventListener("click", () => {
    poller.paused = !poller.paused;
    pause.setAttribute("aria-pressed", String(poller.paused));
    pause.textContent = poller.paused ? "Resume live updates" : "Pause live updates";
    if (!poller.paused) poller.now();
  });
  poller.start();
  return () => poller.stop();
}
