// Forms built from field specs, shown in a modal <dialog> (focus is trapped
// and Escape closes it, natively). Checks run before anything is sent; the
// API's NeutronError message is shown verbatim when the server refuses.
//
// A field spec: {name, label, type: text|number|checkbox|select|checks|textarea,
//   required, help, placeholder, options(data) -> [{value, label}], nullable,
//   check(value, values) -> message|null, on: "create"|"edit", admin,
//   initial, get(item) -> value for editing, put(value, body, values, mode)}

import { h, uid } from "./dom.js";

export function visibleFields(fields, mode, session) {
  return fields.filter((f) => (!f.on || f.on === mode) && (!f.admin || session.admin));
}

function emptyValue(field) {
  if (field.type === "checkbox") return Boolean(field.initial);
  if (field.type === "checks") return field.initial ? [...field.initial] : [];
  return field.initial === undefined || field.initial === null ? "" : String(field.initial);
}

/** Form values for an existing item (edit) or the defaults (create). */
export function initialValues(fields, item) {
  const values = {};
  for (const field of fields) {
    if (!item) {
      values[field.name] = emptyValue(field);
      continue;
    }
    const raw = field.get ? field.get(item) : item[field.name];
    if (field.type === "checkbox") values[field.name] = Boolean(raw);
    else if (field.type === "checks") values[field.name] = [...(raw || [])];
    else values[field.name] = raw === null || raw === undefined ? "" : String(raw);
  }
  return values;
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function isEmpty(value) {
  return value === "" || value === null || value === undefined || (Array.isArray(value) && !value.length);
}

/** Messages by field name: required fields first, then each field's own check. */
export function validate(fields, values, data = {}) {
  const errors = {};
  for (const field of fields) {
    const value = values[field.name];
    if (field.required && isEmpty(value)) {
      errors[field.name] = `${field.label} is required.`;
    } else if (field.check && !isEmpty(value)) {
      const message = field.check(value, values, data);
      if (message) errors[field.name] = message;
    }
  }
  return errors;
}

function defaultPut(field, value, body, mode) {
  if (field.type === "checkbox" || field.type === "checks") {
    body[field.name] = value;
  } else if (field.type === "number") {
    if (value !== "") body[field.name] = Number(value);
    else if (mode === "edit" && field.nullable) body[field.name] = null;
  } else if (field.type === "select") {
    if (value !== "") body[field.name] = value;
    else if (mode === "edit" && field.nullable) body[field.name] = null;
  } else if (value !== "" || mode === "edit") {
    body[field.name] = value.trim();
  }
}

/** The request body: every field on create, only the changed ones on edit. */
export function buildBody(fields, values, initial, mode) {
  const body = {};
  for (const field of fields) {
    const value = values[field.name];
    if (mode === "edit" && initial && same(value, initial[field.name])) continue;
    if (field.put) field.put(value, body, values, mode);
    else defaultPut(field, value, body, mode);
  }
  return body;
}

function selectControl(field, id, value, data) {
  const options = field.options ? field.options(data) : [];
  const select = h("select", { id, name: field.name });
  if (!field.required || !options.length) {
    select.append(h("option", { value: "" }, field.emptyLabel || "—"));
  }
  for (const option of options) {
    select.append(h("option", { value: option.value, selected: option.value === value }, option.label));
  }
  return select;
}

function checksControl(field, value, data) {
  const options = field.options ? field.options(data) : [];
  const box = h("div", { class: "checks", "data-field": field.name });
  for (const option of options) {
    box.append(
      h(
        "label",
        { class: "check" },
        h("input", {
          type: "checkbox",
          value: option.value,
          checked: value.includes(option.value),
        }),
        " ",
        option.label,
      ),
    );
  }
  if (!options.length) box.append(h("p", { class: "hint" }, "None available."));
  return box;
}

function control(field, id, value, data) {
  const common = { id, name: field.name, placeholder: field.placeholder };
  switch (field.type) {
    case "checkbox":
      return h("input", { ...common, type: "checkbox", checked: value });
    case "select":
      return selectControl(field, id, value, data);
    case "textarea":
      return h("textarea", { ...common, rows: 3, spellcheck: "false" }, value);
    case "number":
      return h("input", { ...common, type: "text", inputmode: "numeric", value, autocomplete: "off" });
    default:
      return h("input", { ...common, type: "text", value, autocomplete: "off", spellcheck: "false" });
  }
}

function fieldRow(field, value, data) {
  const id = uid(`f-${field.name.replace(/[^a-z0-9]/gi, "-")}`);
  const errorId = `${id}-error`;
  const helpId = `${id}-help`;
  const describedBy = [field.help ? helpId : null, errorId].filter(Boolean).join(" ");
  const help = field.help ? h("p", { class: "hint", id: helpId }, field.help) : null;
  const error = h("p", { class: "field-error", id: errorId, hidden: true });
  if (field.type === "checks") {
    const box = checksControl(field, value, data);
    return h(
      "fieldset",
      { class: "field", "data-name": field.name, "aria-describedby": describedBy },
      h("legend", {}, field.label),
      box,
      help,
      error,
    );
  }
  const input = control(field, id, value, data);
  input.setAttribute("aria-describedby", describedBy);
  if (field.required) input.setAttribute("aria-required", "true");
  const text = field.required ? `${field.label} (required)` : field.label;
  if (field.type === "checkbox") {
    return h("div", { class: "field check-field", "data-name": field.name },
      h("label", { for: id }, input, " ", field.label), help, error);
  }
  return h("div", { class: "field", "data-name": field.name },
    h("label", { for: id }, text), input, help, error);
}

function readField(field, row) {
  if (field.type === "checks") {
    return [...row.querySelectorAll("input:checked")].map((el) => el.value);
  }
  const el = row.querySelector("input, select, textarea");
  return field.type === "checkbox" ? el.checked : el.value;
}

/** Render fields; returns {element, read(), mark(errors)}. Fields marked
 * ``advanced`` go in a "More options" disclosure, open when one has a value. */
export function renderFields(fields, values, data) {
  const rows = new Map(fields.map((f) => [f.name, fieldRow(f, values[f.name], data)]));
  const basic = fields.filter((f) => !f.advanced).map((f) => rows.get(f.name));
  const extra = fields.filter((f) => f.advanced);
  const filled = extra.some((f) => f.type !== "checkbox" && !isEmpty(values[f.name]));
  const more = extra.length
    ? h("details", { class: "advanced", open: filled }, h("summary", {}, "More options"), extra.map((f) => rows.get(f.name)))
    : null;
  const element = h("div", { class: "fields" }, basic, more);
  return {
    element,
    read() {
      return Object.fromEntries(fields.map((f) => [f.name, readField(f, rows.get(f.name))]));
    },
    mark(errors) {
      let first = null;
      for (const field of fields) {
        const row = rows.get(field.name);
        const message = errors[field.name];
        const error = row.querySelector(".field-error");
        const input = row.querySelector("input, select, textarea");
        error.textContent = message || "";
        error.hidden = !message;
        if (message) input.setAttribute("aria-invalid", "true");
        else input.removeAttribute("aria-invalid");
        if (message && !first) first = input;
      }
      if (first && more && more.contains(first)) more.open = true;
      first?.focus();
      return first;
    },
  };
}

/** A modal form: validates, calls submit(values); keeps itself open with the
 * API's message on failure. Resolves true when submitted, false when cancelled. */
export function openForm({ title, fields, values, data, submitLabel, intro, submit, danger }) {
  return new Promise((resolve) => {
    const titleId = uid("dlg");
    const formError = h("p", { class: "form-error", role: "alert", hidden: true });
    const rendered = renderFields(fields, values, data);
    const button = h("button", { type: "submit", class: danger ? "danger" : "primary" }, submitLabel);
    const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
    const form = h(
      "form",
      { novalidate: true },
      h("h2", { id: titleId }, title),
      intro ? h("p", { class: "intro" }, intro) : null,
      rendered.element,
      formError,
      h("div", { class: "actions" }, button, cancel),
    );
    const dialog = h("dialog", { "aria-labelledby": titleId, class: "form-dialog" }, form);
    const opener = document.activeElement;
    let done = false;
    const finish = (ok) => {
      if (done) return;
      done = true;
      dialog.close();
      dialog.remove();
      // Back where the user was; if that control was re-rendered, to the page heading.
      const back = opener && opener.isConnected ? opener : document.querySelector("main h1");
      back?.focus();
      resolve(ok);
    };
    cancel.addEventListener("click", () => finish(false));
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      finish(false);
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      formError.hidden = true;
      const current = rendered.read();
      const errors = validate(fields, current, data);
      if (rendered.mark(errors)) return;
      button.disabled = true;
      try {
        await submit(current);
        finish(true);
      } catch (err) {
        formError.textContent = err.message;
        formError.hidden = false;
        formError.scrollIntoView({ block: "nearest" });
        button.disabled = false;
      }
    });
    document.body.append(dialog);
    dialog.showModal();
    (form.querySelector("input, select, textarea") || button).focus();
  });
}

/** A yes/no question with the API call to make on yes. */
export function confirmAction({ title, text, confirmLabel, action }) {
  return openForm({
    title,
    intro: text,
    fields: [],
    values: {},
    data: {},
    submitLabel: confirmLabel,
    danger: true,
    submit: action,
  });
}
