// The trace page: pick a source port, describe a packet, POST
// /v2.0/netvirt/trace, and read the answer as a path across the datapaths,
// each stage with its flow (match, actions) and provenance, and the verdict.

import { lists, post } from "./api.js";
import { announce, clear, h, label, shortId } from "./dom.js";
import { KIND_ROUTES, isServicePort, ips } from "./specs.js";

const EXAMPLES = [
  "ip4.dst == 10.0.0.3 && tcp.dst == 22",
  "ip4.dst == 8.8.8.8 && icmp4",
  "udp.dst == 67",
  "arp",
];

/** Steps grouped into visits of a datapath, in order (one per "enter"). */
export function hops(steps) {
  const out = [];
  for (const step of steps) {
    if (step.event === "enter" || !out.length) {
      out.push({ datapath: step.datapath, kind: step.datapath_kind, detail: step.event === "enter" ? step.detail : "", steps: [] });
      if (step.event === "enter") continue;
    }
    out[out.length - 1].steps.push(step);
  }
  return out;
}

function provenance(prov, names) {
  if (!prov) return null;
  const parts = [h("span", { class: "builder" }, prov.builder)];
  if (prov.nb_kind) {
    const target = names.get(prov.nb_id);
    const text = `${prov.nb_kind} ${target ? target.name : shortId(prov.nb_id)}`;
    const route = KIND_ROUTES[prov.nb_kind];
    parts.push(" · ", route ? h("a", { href: `#/${route}/${prov.nb_id}` }, text) : text);
  }
  if (prov.note) parts.push(` · ${prov.note}`);
  return h("span", { class: "prov" }, "from ", parts);
}

function stageItem(step, names) {
  if (step.event === "stage") {
    const passThrough = step.actions === "next;";
    return h("li", { class: ["stage", passThrough ? "pass" : ""] },
      h("div", { class: "stage-head" }, h("code", { class: "stage-name" }, step.stage),
        ` ${step.pipeline} · priority ${step.priority ?? "?"} · `, provenance(step.provenance, names)),
      h("div", { class: "flow" }, h("span", { class: "k" }, "match"), h("code", {}, step.match ?? "")),
      h("div", { class: "flow" }, h("span", { class: "k" }, "actions"), h("code", {}, step.actions ?? "")));
  }
  if (step.event === "drop") {
    return h("li", { class: "drop", role: "note" }, h("strong", {}, "Dropped"),
      step.stage ? ` in ${step.stage}` : "", ": ", h("code", {}, step.detail));
  }
  if (step.event === "deliver") {
    return h("li", { class: "deliver" }, h("strong", {}, "Delivered"), ` to ${step.detail}`);
  }
  return h("li", { class: "note" }, `→ ${step.detail}`);
}

function pathOf(result, groups) {
  const chip = (cls, text) => h("li", { class: ["hop", cls] }, h("span", { class: "chip" }, text));
  const items = [chip("port", `port ${result.from_port}`)];
  for (const hop of groups) {
    const dropped = hop.steps.some((s) => s.event === "drop");
    items.push(chip(`${hop.kind} ${dropped ? "dropped" : ""}`, `${hop.kind} ${hop.datapath}`));
    for (const step of hop.steps) {
      if (step.event === "deliver") items.push(chip("deliver", `✓ ${step.detail}`));
      if (step.event === "drop") items.push(chip("drop", `✕ ${step.detail}`));
    }
  }
  return h("ol", { class: "path", "aria-label": "Path of the packet" }, items);
}

function headers(packet) {
  return h("code", { class: "headers" }, Object.entries(packet).map(([k, v]) => `${k}=${v}`).join(", "));
}

/** The rendered result of one trace. */
export function renderTrace(result, names) {
  const groups = hops(result.steps);
  const dropped = result.drops.length > 0;
  const verdictClass = dropped ? "drop" : result.outputs.length ? "ok" : "none";
  const hide = h("input", { type: "checkbox", id: "hide-pass" });
  const sections = groups.map((hop) =>
    h("section", { class: "hop-detail", "data-datapath": hop.datapath },
      h("h3", {}, `${hop.kind} ${hop.datapath}`, hop.detail ? ` — ${hop.detail}` : ""),
      h("ol", { class: "stages" }, hop.steps.map((step) => stageItem(step, names)))));
  const body = h("div", { class: "hops" }, sections);
  hide.addEventListener("change", () => body.classList.toggle("hide-pass", hide.checked));
  return h("div", { class: "trace-result" },
    h("p", { id: "trace-verdict", class: ["verdict", verdictClass], role: "status" }, "Verdict: ", h("strong", {}, result.verdict),
      dropped ? ` — dropped for reason ${result.drops.join(", ")}` : ""),
    h("p", {}, `Packet from ${result.from_port}: `, headers(result.packet)),
    pathOf(result, groups),
    result.outputs.map((o) => h("p", { class: "output" }, `Output to ${o.port}: `, headers(o.packet))),
    h("p", { class: "toolbar" }, h("label", { for: "hide-pass", class: "inline" }, hide, " Hide stages that only say next;"),
      h("span", { class: "hint" }, ` Traced against compiled generation ${result.generation}.`)),
    body,
    h("details", {}, h("summary", {}, "As netvirt trace prints it"), h("pre", {}, result.text)),
  );
}

function portOptions(data) {
  const nets = new Map(data.networks.map((n) => [n.id, label(n)]));
  return data.ports
    .filter((p) => !isServicePort(p, data))
    .map((p) => ({ value: p.id, label: `${label(p)} — ${ips(p) || p.mac_address} (${nets.get(p.network_id) || shortId(p.network_id)})` }));
}

export async function traceView(root, session, params) {
  const data = await lists(["ports", "networks", "loadbalancers", "routers", "subnets"]);
  const names = new Map(["ports", "networks", "routers", "subnets"].flatMap((k) => data[k].map((i) => [i.id, { name: label(i) }])));
  const select = h("select", { id: "trace-port", "aria-describedby": "trace-port-error", "aria-required": "true" },
    h("option", { value: "" }, "— choose a port —"),
    portOptions(data).map((o) => h("option", { value: o.value, selected: o.value === params.get("port") }, o.label)));
  const flow = h("input", { id: "trace-flow", type: "text", autocomplete: "off", spellcheck: "false", "aria-describedby": "trace-flow-help",
    placeholder: EXAMPLES[0] });
  const portError = h("p", { class: "field-error", id: "trace-port-error", hidden: true });
  const formError = h("p", { class: "form-error", role: "alert", hidden: true });
  const result = h("div", { id: "trace-result", "aria-live": "polite" });
  const button = h("button", { type: "submit", class: "primary" }, "Trace");
  const form = h("form", { novalidate: true, class: "trace-form" },
    h("div", { class: "field" }, h("label", { for: "trace-port" }, "Source port (required)"), select, portError),
    h("div", { class: "field" }, h("label", { for: "trace-flow" }, "Packet (microflow)"), flow,
      h("p", { class: "hint", id: "trace-flow-help" },
        "Match-language terms joined by && — e.g. ip4.dst == 10.0.1.2 && tcp.dst == 5432. ",
        "Anything not given is filled in as the VM's stack would (addresses from the port, a TCP SYN, an echo request…)."),
      h("p", { class: "examples" }, "Examples: ", EXAMPLES.map((ex) =>
        h("button", { type: "button", class: "link", onclick: () => { flow.value = ex; flow.focus(); } }, ex)))),
    formError,
    h("div", { class: "actions" }, button));
  root.append(h("h1", { tabindex: "-1" }, "Trace a packet"), form, result);
  if (!data.ports.length) form.append(h("p", { class: "empty" }, "No port to trace from yet."));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    formError.hidden = true;
    portError.hidden = !!select.value;
    portError.textContent = select.value ? "" : "Source port is required.";
    if (!select.value) {
      select.setAttribute("aria-invalid", "true");
      select.focus();
      return;
    }
    select.removeAttribute("aria-invalid");
    button.disabled = true;
    clear(result).append(h("p", {}, "Tracing…"));
    try {
      const answer = await post("/v2.0/netvirt/trace", { trace: { from_port: select.value, microflow: flow.value.trim() } });
      clear(result).append(renderTrace(answer.trace, names));
      announce(`Verdict: ${answer.trace.verdict}`);
    } catch (err) {
      clear(result);
      formError.textContent = err.message;
      formError.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
}
