{% verbatim %}
/* Run page controls that _dashboard.js leaves to this file: forking from a timeline step
   (then going to the new run), and keeping what someone typed in a control form when the
   run moves on under it or a control is refused. Plain ES2017, no build step. */
(function () {
  "use strict";
  var Runyard = (window.Runyard = window.Runyard || {});

  function dirty(root) {
    var fields = root.querySelectorAll("textarea, input, select");
    for (var i = 0; i < fields.length; i++) {
      var f = fields[i];
      if (f.tagName === "SELECT") {
        // With no option marked `selected`, a single select starts on its first one.
        var start = 0;
        for (var j = 0; j < f.options.length; j++) {
          if (f.options[j].defaultSelected) { start = j; break; }
        }
        if (f.selectedIndex !== start) return true;
      } else if (f.type !== "hidden" && f.type !== "checkbox" && f.type !== "radio" &&
                 f.value !== f.defaultValue) {
        return true;
      }
    }
    return false;
  }

  /* Called by the run page before it replaces the controls panel with `html`. While a form
     there holds typed text, the panel stays as it is and says the run moved on; the person
     chooses when to see the current controls. Returns true when it kept the panel. */
  var held = null;
  Runyard.holdControls = function (el, html) {
    if (!dirty(el)) { held = null; return false; }
    held = html;
    if (!el.querySelector("#controls-held")) {
      var note = document.createElement("div");
      note.id = "controls-held";
      note.className = "msg-info held-note";
      note.style.cssText = "padding:8px 12px;border:1px solid;border-radius:8px;margin-bottom:12px;font-size:13px";
      note.setAttribute("role", "status");
      note.appendChild(document.createTextNode("The run has changed since you started typing; your text is kept. "));
      var btn = document.createElement("button");
      btn.type = "button";
      btn.className = "btn btn-sm";
      btn.id = "controls-refresh";
      btn.textContent = "Show current controls";
      btn.addEventListener("click", function () {
        if (held !== null) el.innerHTML = held;
        held = null;
      });
      note.appendChild(btn);
      el.insertBefore(note, el.firstChild);
    }
    return true;
  };

  function post(form) {
    var token = form.querySelector("input[name=csrfmiddlewaretoken]");
    // getAttribute: a field named "action" would shadow form.action.
    return fetch(form.getAttribute("action"), {
      method: "POST", body: new FormData(form), credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": token ? token.value : "" }
    }).then(function (r) {
      return r.json().catch(function () {
        return { ok: r.ok, message: r.ok ? "Done." : "The request failed (" + r.status + ")." };
      });
    });
  }

  // A fork button sits in a timeline row that opens the step inspector when clicked: the
  // click is the button's alone (its form still submits; that is the default action).
  document.addEventListener("click", function (e) {
    if (e.target.closest && e.target.closest(".step-fork-form")) e.stopPropagation();
  }, true);

  document.addEventListener("submit", function (e) {
    var form = e.target.closest ? e.target.closest("form[data-fork]") : null;
    if (!form) return;
    e.preventDefault();
    var button = form.querySelector("button");
    if (button) button.disabled = true;
    post(form)
      .then(function (res) {
        if (res.ok && res.redirect) { location.assign(res.redirect); return; }
        Runyard.toast(res.message, res.ok);
        if (button) button.disabled = false;
      })
      .catch(function () {
        Runyard.toast("The request did not reach the server.", false);
        if (button) button.disabled = false;
      });
  });
})();
{% endverbatim %}
