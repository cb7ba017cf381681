/* Runyard step inspector: a click (or Enter) on a step row or a graph node opens that step in
   a side panel, loaded as server-rendered HTML from /runs/<id>/steps/... ; Escape closes it.
   /runs/<id>/?step=<index> opens it on load. Plain ES2017, no build step.

   Everything is delegated from `document`: the run page re-renders the steps panel as events
   arrive, so rows come and go under us. */
(function () {
  "use strict";
  var panel = document.getElementById("step-inspector");
  if (!panel) return;
  var body = panel.querySelector(".inspector-body");
  var base = panel.getAttribute("data-steps-url"); // .../runs/<id>/steps/
  var current = null; // {index, node} of the step shown
  var origin = null; // what opened the panel, to give focus back: {step} or {node}
  var loads = 0;

  function rowFor(index) {
    return document.querySelector('#panel-timeline tr[data-step="' + CSS.escape(String(index)) + '"]');
  }
  function nodeFor(name) {
    return document.querySelector('#run-diagram .dg-node[data-node="' + CSS.escape(String(name)) + '"]');
  }

  function mark() {
    document.querySelectorAll(".is-inspected").forEach(function (el) {
      el.classList.remove("is-inspected");
    });
    if (!current) return;
    var row = current.index != null ? rowFor(current.index) : null;
    var node = current.node != null ? nodeFor(current.node) : null;
    if (row) row.classList.add("is-inspected");
    if (node) node.classList.add("is-inspected");
  }

  function setUrl(index) {
    var url = new URL(location.href);
    if (index == null) url.searchParams.delete("step");
    else url.searchParams.set("step", index);
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  }

  function load(url) {
    var mine = ++loads;
    panel.hidden = false;
    body.setAttribute("aria-busy", "true");
    return fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) {
        return r.text().then(function (html) { return { ok: r.ok, status: r.status, html: html }; });
      })
      .then(function (res) {
        if (mine !== loads) return; // a later click won
        body.removeAttribute("aria-busy");
        if (!res.ok) {
          current = null;
          body.innerHTML = "";
          var p = document.createElement("p");
          p.className = "callout callout-error";
          p.setAttribute("role", "alert");
          p.textContent = res.status === 404
            ? "This step does not exist in this run."
            : "The step could not be loaded (" + res.status + ").";
          body.appendChild(p);
          setUrl(null);
          mark();
          return;
        }
        body.innerHTML = res.html;
        var root = body.querySelector(".insp");
        var index = root && root.getAttribute("data-inspect-step");
        current = {
          index: index,
          node: root && (root.getAttribute("data-node") || root.getAttribute("data-inspect-node"))
        };
        setUrl(index);
        mark();
        body.scrollTop = 0;
        var title = body.querySelector("#inspector-title");
        if (title) title.focus({ preventScroll: true });
      })
      .catch(function () {
        if (mine !== loads) return;
        body.removeAttribute("aria-busy");
        body.textContent = "The step could not be loaded: the server did not answer.";
      });
  }

  function openStep(index, from) {
    if (from !== undefined) origin = from;
    return load(base + encodeURIComponent(index) + "/?partial=1");
  }
  function openNode(name) {
    origin = { node: name };
    return load(base + "?partial=1&node=" + encodeURIComponent(name));
  }

  function close() {
    if (panel.hidden) return;
    loads++; // drop an answer still on its way
    panel.hidden = true;
    body.innerHTML = "";
    current = null;
    setUrl(null);
    mark();
    var back = origin && (origin.step != null ? rowFor(origin.step) : nodeFor(origin.node));
    origin = null;
    if (back) back.focus();
  }

  // Rows and nodes take the keyboard focus (nodes are drawn by the server as plain <g>).
  function prepareNodes() {
    var svg = document.querySelector("#run-diagram svg");
    if (!svg) return;
    svg.setAttribute("role", "group");
    svg.querySelectorAll(".dg-node[data-node]").forEach(function (g) {
      g.setAttribute("tabindex", "0");
      g.setAttribute("role", "button");
      g.setAttribute("aria-label", "Inspect node " + g.getAttribute("data-node"));
    });
  }

  function target(el) {
    if (!el || !el.closest) return null;
    // A link, button or form field inside a row keeps its own meaning.
    if (el.closest("a, button, input, select, textarea, summary, label")) {
      var link = el.closest("[data-inspect-step-link]");
      return link && panel.contains(link) ? { link: link } : null;
    }
    var row = el.closest("#panel-timeline tr[data-step]");
    if (row) return { row: row };
    var node = el.closest("#run-diagram .dg-node[data-node]");
    if (node) return { node: node };
    return null;
  }

  function activate(t) {
    if (t.link) {
      var index = t.link.getAttribute("data-inspect-step-link");
      openStep(index, origin);
    } else if (t.row) {
      var step = t.row.getAttribute("data-step");
      openStep(step, { step: step });
    } else if (t.node) {
      openNode(t.node.getAttribute("data-node"));
    }
  }

  document.addEventListener("click", function (e) {
    if (e.target.closest && e.target.closest("[data-inspector-close]")) { close(); return; }
    var t = target(e.target);
    if (!t) return;
    if (t.link) e.preventDefault();
    activate(t);
  });

  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && !panel.hidden) {
      e.preventDefault();
      close();
      return;
    }
    if (e.key !== "Enter" && e.key !== " ") return;
    var el = document.activeElement;
    if (!el || !el.matches || !el.matches("#panel-timeline tr[data-step], #run-diagram .dg-node[data-node]")) return;
    e.preventDefault();
    activate(target(el));
  });

  var timeline = document.getElementById("panel-timeline");
  if (timeline && "MutationObserver" in window) {
    new MutationObserver(mark).observe(timeline, { childList: true, subtree: true });
  }

  prepareNodes();
  var deep = new URLSearchParams(location.search).get("step");
  if (deep && /^\d+$/.test(deep)) openStep(deep, { step: deep });
})();
