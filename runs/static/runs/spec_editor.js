// The graph spec editor checks the spec as it is typed: a pause in typing sends the JSON to
// POST /api/v1/graphs/validate (the dashboard session, with its CSRF token), the validator the
// API stores specs with and whose rules the published JSON Schema states
// (/api/v1/schemas/graph-spec.json). Each problem is shown at the node or edge it concerns:
// its JSON path and line, and a click selects that line in the editor. YAML is checked when
// stored. No dependencies.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  const editor = form && form.querySelector("textarea[name=spec]");
  if (!editor) return;
  const url = form.dataset.validateUrl;
  const tokenInput = form.querySelector("input[name=csrfmiddlewaretoken]");
  const panel = document.createElement("div");
  panel.id = "spec-live";
  panel.className = "spec-live small";
  panel.setAttribute("aria-live", "polite");
  editor.insertAdjacentElement("afterend", panel);
  const DELAY_MS = 400;
  let timer = null;
  let inflight = null;
  let sequence = 0;

  // Where each object member and array element starts in `text` (already valid JSON), by the
  // path validation names it with: `nodes.classify`, `edges[1]`, `state.log`.
  function positions(text) {
    const out = new Map();
    let i = 0;
    const space = () => { while (i < text.length && /\s/.test(text[i])) i++; };
    const string = () => {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      const raw = text.slice(i, j + 1);
      i = j + 1;
      return JSON.parse(raw);
    };
    const value = (path, depth) => {
      space();
      const c = text[i];
      if (depth > 64) return;
      if (c === "{") {
        i++; space();
        if (text[i] === "}") { i++; return; }
        for (;;) {
          space();
          const at = i;
          const key = string();
          const p = path ? path + "." + key : key;
          if (!out.has(p)) out.set(p, at);
          space(); i++; // the colon
          value(p, depth + 1);
          space();
          if (text[i++] !== ",") return;
        }
      }
      if (c === "[") {
        i++; space();
        if (text[i] === "]") { i++; return; }
        for (let n = 0; ; n++) {
          space();
          const p = path + "[" + n + "]";
          if (!out.has(p)) out.set(p, i);
          value(p, depth + 1);
          space();
          if (text[i++] !== ",") return;
        }
      }
      if (c === '"') { string(); return; }
      while (i < text.length && !/[,\]}\s]/.test(text[i])) i++;
    };
    value("", 0);
    return out;
  }

  function lineOf(text, offset) {
    let line = 1;
    for (let k = 0; k < offset; k++) if (text.charCodeAt(k) === 10) line++;
    return line;
  }

  // "nodes.classify" -> a node, "edges[2]" -> an edge, anything else -> that field.
  function describe(where) {
    let m = /^nodes\.([^.[\]]+)/.exec(where);
    if (m) return { kind: "node", label: "node " + m[1], path: "nodes." + m[1] };
    m = /^edges\[(\d+)\]/.exec(where);
    if (m) return { kind: "edge", label: "edge " + m[1], path: "edges[" + m[1] + "]" };
    return { kind: "field", label: where, path: where };
  }

  function select(text, offset) {
    const start = text.lastIndexOf("\n", offset - 1) + 1;
    let end = text.indexOf("\n", offset);
    if (end < 0) end = text.length;
    editor.focus();
    editor.setSelectionRange(start, end);
    const lineHeight = parseFloat(getComputedStyle(editor).lineHeight) || 18;
    editor.scrollTop = Math.max(0, (lineOf(text, offset) - 3) * lineHeight);
  }

  function show(state, title, groups, text) {
    panel.dataset.state = state;
    panel.replaceChildren();
    const head = document.createElement("div");
    head.className = "spec-live-title";
    head.textContent = title;
    panel.append(head);
    editor.setAttribute("aria-invalid", state === "invalid" ? "true" : "false");
    if (!groups || !groups.length) return;
    const where = positions(text);
    const list = document.createElement("ul");
    list.className = "problems spec-live-problems";
    for (const group of groups) {
      const item = document.createElement("li");
      item.className = "spec-problem";
      item.dataset.kind = group.target.kind;
      item.dataset.where = group.target.path;
      const offset = where.get(group.target.path);
      const at = document.createElement(offset === undefined ? "span" : "button");
      at.className = "linkish spec-problem-at";
      at.textContent = group.target.label;
      if (offset !== undefined) {
        at.type = "button";
        at.title = "Show it in the spec";
        at.addEventListener("click", () => select(editor.value, offset));
      }
      const path = document.createElement("code");
      path.className = "spec-problem-path";
      path.textContent = "$." + group.target.path;
      item.append(at, " ", path);
      if (offset !== undefined) {
        const line = document.createElement("span");
        line.className = "muted spec-problem-line";
        line.textContent = " · line " + lineOf(text, offset);
        item.append(line);
      }
      const messages = document.createElement("ul");
      for (const message of group.messages) {
        const li = document.createElement("li");
        li.textContent = message;
        messages.append(li);
      }
      item.append(messages);
      list.append(item);
    }
    panel.append(list);
  }

  function group(problems) {
    const byPath = new Map();
    for (const problem of problems) {
      const target = describe(String(problem.where || "spec"));
      if (!byPath.has(target.path)) byPath.set(target.path, { target, messages: [] });
      const detail = problem.where !== target.path ? problem.where + ": " : "";
      byPath.get(target.path).messages.push(detail + problem.message);
    }
    return [...byPath.values()];
  }

  async function check() {
    const text = editor.value;
    const mine = ++sequence;
    if (inflight) inflight.abort();
    inflight = null;
    if (!text.trim()) { panel.replaceChildren(); delete panel.dataset.state; return; }
    let data;
    try {
      data = JSON.parse(text);
    } catch (err) {
      if (/^\s*[{[]/.test(text)) show("invalid", "Not valid JSON yet: " + err.message, [], text);
      else show("unchecked", "YAML is checked when you store it.", [], text);
      return;
    }
    if (data === null || typeof data !== "object" || Array.isArray(data)) {
      show("invalid", "A spec is a JSON object.", [], text);
      return;
    }
    show("checking", "Checking…", [], text);
    const controller = new AbortController();
    inflight = controller;
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          "X-CSRFToken": tokenInput ? tokenInput.value : "",
        },
        body: text,
        signal: controller.signal,
      });
    } catch (err) {
      if (err.name !== "AbortError" && mine === sequence) {
        show("error", "Could not check the spec: " + err.message, [], text);
      }
      return;
    }
    const body = await response.json().catch(() => null);
    if (mine !== sequence) return; // the spec changed meanwhile
    if (response.ok && body) {
      if (body.valid) show("valid", "✓ The spec is valid.", [], text);
      else show("invalid", body.problems.length + " problem" + (body.problems.length === 1 ? "" : "s") + ":", group(body.problems), text);
    } else {
      const message = body && body.error ? body.error.message : response.statusText;
      show("error", "Could not check the spec: " + message, [], text);
    }
  }

  editor.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(check, DELAY_MS);
  });
  if (editor.value.trim()) check();
})();
