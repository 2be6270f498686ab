// Resource pages: a list (filter, create, edit, delete) and a detail page per
// object, both driven by the specs in specs.js.

import { del, get, lists, post, put } from "./api.js";
import { announce, clear, h, label, show, showError } from "./dom.js";
import { buildBody, confirmAction, initialValues, openForm, visibleFields } from "./forms.js";
import { isServicePort } from "./specs.js";

function statusBadge(text) {
  return h("span", { class: `badge st-${String(text).toLowerCase()}` }, String(text));
}

function cell(column, item, data) {
  const value = column.value(item, data);
  if (column.status) return statusBadge(value);
  return value instanceof Node ? value : show(value);
}

async function load(spec, session) {
  const names = [...new Set([spec.source, ...spec.needs, ...(session.admin ? ["projects"] : [])])];
  return lists(names);
}

/** Admins create for any project and see whose each object is. */
const PROJECT_FIELD = {
  name: "project_id",
  label: "Project",
  type: "select",
  on: "create",
  admin: true,
  emptyLabel: "admin (own project)",
  options: (d) => (d.projects || []).filter((p) => p.id !== "admin").map((p) => ({ value: p.id, label: p.name })),
};

function columns(spec, session) {
  if (!session.admin) return spec.columns;
  const project = (item, data) => (data.projects || []).find((p) => p.id === item.project_id)?.name || item.project_id;
  return [...spec.columns, { label: "Project", value: project }];
}

/** Another project's object that a member can read (shared or external): not theirs to change. */
function foreign(session, item) {
  return !session.admin && item.project_id && item.project_id !== session.project_id;
}

function display(spec, item) {
  return spec.display ? spec.display(item) : label(item);
}

async function openEditor(spec, session, data, item) {
  const mode = item ? "edit" : "create";
  const fields = visibleFields([PROJECT_FIELD, ...spec.fields], mode, session);
  const initial = initialValues(fields, item);
  return openForm({
    title: item ? `Edit ${spec.singular} ${display(spec, item)}` : `Create ${spec.singular}`,
    fields,
    values: initial,
    data,
    submitLabel: item ? "Save" : "Create",
    submit: async (values) => {
      const body = buildBody(fields, values, item ? initial : null, mode);
      if (item) {
        if (!Object.keys(body).length) return;
        await put(`${spec.path}/${item.id}`, { [spec.member]: body });
      } else {
        const created = await post(spec.path, { [spec.member]: body });
        announce(`Created ${spec.singular} ${display(spec, created[spec.member])}.`);
      }
    },
  });
}

async function askDelete(spec, item) {
  return confirmAction({
    title: `Delete ${spec.singular} ${display(spec, item)}?`,
    text: spec.deleteText || "This cannot be undone.",
    confirmLabel: "Delete",
    action: () => del(`${spec.path}/${item.id}${spec.deleteQuery || ""}`),
  });
}

function rowActions(spec, session, data, item, refresh, service) {
  const name = display(spec, item);
  if (foreign(session, item)) return h("td", { class: "row-actions hint" }, "another project's");
  const edit = h("button", {
    type: "button",
    class: "secondary small",
    "aria-label": `Edit ${spec.singular} ${name}`,
    onclick: async () => {
      if (await openEditor(spec, session, data, item)) {
        announce(`Saved ${spec.singular} ${name}.`);
        await refresh();
      }
    },
  }, "Edit");
  const remove = h("button", {
    type: "button",
    class: "danger small",
    "aria-label": `Delete ${spec.singular} ${name}`,
    disabled: service,
    title: service ? "Service ports go with their router, floating IP or load balancer." : null,
    onclick: async () => {
      if (await askDelete(spec, item)) {
        announce(`Deleted ${spec.singular} ${name}.`);
        await refresh();
      }
    },
  }, "Delete");
  return h("td", { class: "row-actions" }, edit, " ", remove);
}

function table(spec, session, data, items, refresh) {
  const cols = columns(spec, session);
  const head = h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c.label)),
    h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")));
  const rows = items.map((item) => {
    const service = spec.key === "ports" && isServicePort(item, data);
    return h("tr", { "data-name": display(spec, item), "data-id": item.id },
      cols.map((column) => {
        const content = cell(column, item, data);
        if (!column.link) return h("td", {}, content);
        return h("th", { scope: "row" }, h("a", { href: `#/${spec.key}/${item.id}` }, content));
      }),
      rowActions(spec, session, data, item, refresh, service));
  });
  return h("div", { class: "table-wrap" },
    h("table", { class: "list" }, h("caption", { class: "sr-only" }, spec.title), h("thead", {}, head), h("tbody", {}, rows)));
}

/** The list page of one resource type. */
export async function listView(root, session, spec) {
  const state = { filter: "", services: false };
  const body = h("div", { class: "list-body" }, h("p", { class: "empty" }, "Loading…"));
  const filter = h("input", { type: "search", id: "filter", placeholder: "name, address, id…" });
  // Enabled once the lists the form's choices come from are loaded.
  const createButton = h("button", { type: "button", class: "primary", disabled: true, onclick: async () => {
    if (await openEditor(spec, session, state.data, null)) await refresh();
  } }, `Create ${spec.singular}`);
  const toolbar = h("div", { class: "toolbar" },
    createButton,
    h("label", { for: "filter", class: "inline" }, "Filter ", filter));
  if (spec.serviceFilter) {
    const box = h("input", { type: "checkbox", id: "show-service" });
    box.addEventListener("change", () => { state.services = box.checked; render(); });
    toolbar.append(h("label", { for: "show-service", class: "inline" }, box, " Show router, floating IP and load balancer ports"));
  }
  filter.addEventListener("input", () => { state.filter = filter.value.trim().toLowerCase(); render(); });
  root.append(h("h1", { tabindex: "-1" }, spec.title), toolbar, body);

  function render() {
    const data = state.data;
    let items = data[spec.source];
    if (spec.serviceFilter && !state.services) items = items.filter((i) => !isServicePort(i, data));
    if (state.filter) items = items.filter((i) => JSON.stringify(i).toLowerCase().includes(state.filter));
    clear(body);
    body.append(items.length ? table(spec, session, data, items, refresh)
      : h("p", { class: "empty" }, state.filter ? "Nothing matches the filter." : `No ${spec.title.toLowerCase()} yet.`));
  }

  async function refresh() {
    try {
      state.data = await load(spec, session);
      createButton.disabled = false;
      render();
    } catch (err) {
      showError(err.message);
    }
  }
  await refresh();
}

function attributes(item) {
  return h("dl", { class: "attrs" }, Object.entries(item).flatMap(([key, value]) => [
    h("dt", {}, key),
    h("dd", {}, show(value)),
  ]));
}

/** The detail page of one object: attributes, edit/delete, sub-resources. */
export async function detailView(root, session, spec, id) {
  const container = h("div", {});
  root.append(container);
  async function refresh() {
    let item;
    let data;
    try {
      [item, data] = await Promise.all([get(`${spec.path}/${id}`).then((d) => d[spec.member]), load(spec, session)]);
    } catch (err) {
      clear(container);
      container.append(h("h1", { tabindex: "-1" }, `${spec.singular} ${id}`), h("p", { class: "form-error" }, err.message),
        h("p", {}, h("a", { href: `#/${spec.key}` }, `Back to ${spec.title.toLowerCase()}`)));
      return;
    }
    const ctx = { session, data, refresh };
    const sections = spec.detail ? await spec.detail(item, data, ctx) : [];
    const name = display(spec, item);
    const readOnly = foreign(session, item);
    clear(container);
    container.append(
      h("p", { class: "crumbs" }, h("a", { href: `#/${spec.key}` }, spec.title), " / ", name),
      h("h1", { tabindex: "-1" }, `${spec.singular[0].toUpperCase()}${spec.singular.slice(1)} ${name}`),
      readOnly ? h("p", { class: "hint" }, "This object belongs to another project: you can use it, not change it.") : null,
      h("div", { class: "toolbar", hidden: readOnly },
        h("button", { type: "button", class: "secondary", onclick: async () => {
          if (await openEditor(spec, session, data, item)) { announce(`Saved ${spec.singular} ${name}.`); await refresh(); }
        } }, "Edit"),
        spec.key === "ports" ? h("a", { class: "button secondary", href: `#/trace?port=${item.id}` }, "Trace from this port") : null,
        h("button", { type: "button", class: "danger", onclick: async () => {
          if (await askDelete(spec, item)) { announce(`Deleted ${spec.singular} ${name}.`); window.location.hash = `#/${spec.key}`; }
        } }, "Delete")),
      ...sections,
      h("section", { class: "sub", "aria-label": "Attributes" }, h("h2", {}, "Attributes"), attributes(item)),
    );
  }
  await refresh();
}
