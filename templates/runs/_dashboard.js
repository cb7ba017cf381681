{% verbatim %}
/* Runyard dashboard: live pages over websockets (runs/consumers.py protocol), with a polling
   fallback, and control forms posted without leaving the page. Plain ES2017, no build step. */
(function () {
  "use strict";
  var Runyard = (window.Runyard = window.Runyard || {});
  var FATAL_CLOSE = { 4400: "bad request", 4401: "not logged in", 4403: "no access", 4404: "not found" };
  var RUN_STATUS = {
    "run.queued": "queued", "run.started": "running", "run.waiting": "waiting",
    "run.paused": "paused", "run.resumed": "queued", "run.resurrected": "queued",
    "run.cancelling": "cancelling", "run.cancelled": "cancelled", "run.succeeded": "succeeded",
    "run.failed": "failed", "run.interrupted": "interrupted", "run.timed_out": "timed_out"
  };

  function setLive(state, text) {
    var el = document.getElementById("live-indicator");
    if (!el) return;
    el.setAttribute("data-live", state);
    el.textContent = text;
  }

  function toast(message, ok) {
    var box = document.getElementById("toasts");
    if (!box || !message) return;
    var el = document.createElement("div");
    el.className = "toast " + (ok ? "msg-success" : "msg-error");
    el.setAttribute("role", ok ? "status" : "alert");
    el.textContent = message;
    box.appendChild(el);
    setTimeout(function () { el.remove(); }, ok ? 4000 : 8000);
  }
  Runyard.toast = toast;

  function debounce(fn, ms) {
    var timer = null, running = false, again = false;
    function fire() {
      timer = null;
      if (running) { again = true; return; }
      running = true;
      Promise.resolve(fn()).catch(function () {}).then(function () {
        running = false;
        if (again) { again = false; schedule(); }
      });
    }
    function schedule() { if (!timer) timer = setTimeout(fire, ms); }
    schedule.now = function () { clearTimeout(timer); fire(); };
    return schedule;
  }

  /* One websocket stream: replay after `after`, then live; reconnects with the last cursor it
     saw and polls `opts.poll` while it is down. */
  function Stream(opts) {
    var self = this;
    this.after = opts.after;
    this.ws = null;
    this.stopped = false;
    this.backoff = 1000;
    this.pollTimer = null;

    function url() {
      var scheme = location.protocol === "https:" ? "wss://" : "ws://";
      var at = opts.resumeAt ? opts.resumeAt() : self.after;
      var q = at === null || at === undefined ? "" : "?after=" + at;
      return scheme + location.host + opts.path + q;
    }
    function startPolling() {
      if (self.pollTimer || !opts.poll) return;
      self.pollTimer = setInterval(opts.poll, opts.pollEvery || 4000);
      opts.poll();
    }
    function stopPolling() {
      if (self.pollTimer) { clearInterval(self.pollTimer); self.pollTimer = null; }
    }
    function connect() {
      if (self.stopped) return;
      if (!("WebSocket" in window)) { setLive("polling", "Polling"); startPolling(); return; }
      setLive("connecting", "Connecting…");
      var ws;
      try { ws = new WebSocket(url()); } catch (e) { retry(); return; }
      self.ws = ws;
      ws.onmessage = function (msg) {
        var frame;
        try { frame = JSON.parse(msg.data); } catch (e) { return; }
        if (frame.type === "event") {
          self.after = opts.cursor(frame);
          opts.onEvent(frame);
        } else if (frame.type === "synced") {
          self.after = frame.seq;
          self.backoff = 1000;
          stopPolling();
          setLive.apply(null, opts.liveState ? opts.liveState() : ["on", "Live"]);
          if (opts.onSynced) opts.onSynced(frame);
        } else if (frame.type === "live") {
          if (opts.onLive) opts.onLive(frame); // no seq: the cursor stays (runs/live_frames.py)
        } else if (frame.type === "overflow") {
          self.after = frame.after;
        }
      };
      ws.onclose = function (ev) {
        self.ws = null;
        if (self.stopped) return;
        if (FATAL_CLOSE[ev.code]) {
          setLive("off", "Live updates off (" + FATAL_CLOSE[ev.code] + ")");
          return;
        }
        retry();
      };
    }
    function retry() {
      setLive("polling", "Reconnecting… (polling)");
      startPolling();
      setTimeout(connect, self.backoff);
      self.backoff = Math.min(self.backoff * 2, 30000);
    }
    this.stop = function (text) {
      self.stopped = true;
      stopPolling();
      if (self.ws) self.ws.close(1000);
      setLive("off", text || "Live updates off");
    };
    connect();
  }
  Runyard.Stream = Stream;

  var ENDED = { succeeded: 1, failed: 1, cancelled: 1, interrupted: 1, timed_out: 1 };

  function setBadge(el, status) {
    if (!el) return;
    el.className = el.className.replace(/\bs-[a-z_]+/g, "").trim() + " s-" + status;
    el.textContent = status;
    el.setAttribute("data-status", status);
  }

  /* --- runs list ---------------------------------------------------------------------------- */
  Runyard.runList = function (cfg) {
    var tbody = document.getElementById("run-rows");
    if (!tbody) return;
    var liveRows = tbody.getAttribute("data-live-rows") === "1";
    var rowsUrl = tbody.getAttribute("data-rows-url");
    var filterForm = document.getElementById("run-filters");
    if (filterForm) filterForm.addEventListener("submit", function () {
      // Empty filters stay out of the URL, so a shared link reads as what it filters.
      filterForm.querySelectorAll("input, select").forEach(function (el) {
        if (el.name && !el.value) el.disabled = true;
      });
    });

    function statuses() {
      var out = {};
      tbody.querySelectorAll("tr[data-run]").forEach(function (tr) {
        out[tr.getAttribute("data-run")] = tr.getAttribute("data-status");
      });
      return out;
    }
    function reload() {
      if (!liveRows) return Promise.resolve();
      var before = statuses();
      return fetch(rowsUrl, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
        .then(function (html) {
          tbody.innerHTML = html;
          tbody.querySelectorAll("tr[data-run]").forEach(function (tr) {
            var id = tr.getAttribute("data-run");
            if (before[id] !== tr.getAttribute("data-status")) tr.classList.add("flash");
          });
        });
    }
    var refresh = debounce(reload, 300);
    new Stream({
      path: cfg.wsPath,
      after: typeof cfg.after === "number" ? cfg.after : null,
      cursor: function (frame) { return frame.id; },
      onSynced: function () { refresh(); },
      onEvent: function (frame) {
        var tr = tbody.querySelector('tr[data-run="' + frame.run + '"]');
        var status = RUN_STATUS[frame.event];
        if (tr && status) {
          setBadge(tr.querySelector('[data-role="status"]'), status);
          tr.setAttribute("data-status", status);
          if (ENDED[status]) tr.querySelectorAll('[data-role="live"], [data-role="stale-lease"]')
            .forEach(function (el) { el.remove(); });
          tr.classList.remove("flash");
          void tr.offsetWidth;
          tr.classList.add("flash");
        }
        refresh();
      },
      poll: function () { return reload(); },
      pollEvery: 5000
    });
  };

  /* --- run detail --------------------------------------------------------------------------- */
  Runyard.runDetail = function (cfg) {
    var lastSeq = cfg.after;
    // An ended run is not "Live": the indicator says so, and flips back if a retry revives it.
    var ended = !!cfg.terminal;
    function liveState() { return ended ? ["ended", "Run ended"] : ["on", "Live"]; }
    function setEnded(flag) {
      var el = document.getElementById("live-indicator");
      if (flag === ended) return;
      ended = flag;
      if (el && /^(on|ended)$/.test(el.getAttribute("data-live"))) setLive.apply(null, liveState());
    }
    var controlsKey = cfg.controls_key;
    var svg = document.querySelector("#run-diagram svg");
    var rows = document.getElementById("event-rows");
    var log = document.getElementById("event-log");
    var follow = document.getElementById("follow-events");
    if (log && follow && follow.checked) log.scrollTop = log.scrollHeight;

    function node(name) {
      if (!svg || typeof name !== "string") return null;
      return svg.querySelector('.dg-node[data-node="' + CSS.escape(name) + '"]');
    }
    function setNode(name, state) {
      var g = node(name);
      if (g) g.setAttribute("data-state", state);
    }
    function compact(v) {
      // Like the server's json.dumps(separators=(", ", ": ")), so rows look alike.
      if (v === null || typeof v !== "object") {
        var t = JSON.stringify(v);
        return t === undefined ? "null" : t;
      }
      if (Array.isArray(v)) return "[" + v.map(compact).join(", ") + "]";
      return "{" + Object.keys(v).map(function (k) {
        return JSON.stringify(k) + ": " + compact(v[k]);
      }).join(", ") + "}";
    }
    function preview(data) {
      var text = compact(data === undefined ? {} : data);
      return text.length > 240 ? text.slice(0, 239) + "…" : text;
    }
    function appendEvent(ev) {
      if (!rows || ev.seq <= lastSeq) return false;
      lastSeq = ev.seq;
      var tr = document.createElement("tr");
      tr.setAttribute("data-seq", ev.seq);
      tr.className = "flash";
      var cells = [
        [String(ev.seq), "faint"],
        [(ev.ts || "").slice(11, 19), "nowrap faint"],
        [ev.event, "etype e-" + ev.event.split(".")[0]],
        [preview(ev.data), "edata"]
      ];
      cells.forEach(function (c) {
        var td = document.createElement("td");
        td.className = c[1];
        td.textContent = c[0];
        tr.appendChild(td);
      });
      rows.appendChild(tr);
      while (rows.children.length > 500) rows.removeChild(rows.firstChild);
      if (log && follow && follow.checked) log.scrollTop = log.scrollHeight;
      return true;
    }
    var liveOut = Runyard.liveOutput ? Runyard.liveOutput({ setNode: setNode }) : null;
    function applyEvent(ev, fromSnapshot) {
      if (!appendEvent(ev)) return;
      if (liveOut) liveOut.onEvent(ev);
      var d = ev.data || {};
      switch (ev.event) {
        case "step.started": case "step.retrying": setNode(d.node, "running"); break;
        case "step.completed": setNode(d.node, "completed"); break;
        case "step.failed": setNode(d.node, "failed"); break;
        case "branch.started": setNode(d.branch, "running"); break;
        case "branch.completed": setNode(d.branch, "completed"); break;
        case "branch.failed": setNode(d.branch, "failed"); break;
        case "approval.requested": case "input.requested": setNode(d.node, "waiting"); break;
        case "run.waiting": if (d.waiting_for) setNode(d.waiting_for.node, "waiting"); break;
      }
      if (RUN_STATUS[ev.event]) setBadge(document.getElementById("run-status"), RUN_STATUS[ev.event]);
      if (RUN_STATUS[ev.event]) setEnded(!!ENDED[RUN_STATUS[ev.event]]);
      if (ended) {
        var liveBadge = document.getElementById("run-live-badge");
        if (liveBadge) liveBadge.remove();
      }
      if (!fromSnapshot) refresh();
    }
    function busy(el) {
      // A form someone is typing in is not replaced under their hands (unless it is gone).
      var active = document.activeElement;
      return active && el.contains(active) && /TEXTAREA|INPUT|SELECT/.test(active.tagName);
    }
    var parsed = document.createElement("template");
    function unmasked(html) {
      return html.replace(/(name="csrfmiddlewaretoken" value=")[^"]*/g, "$1");
    }
    function applySnapshot(snap, forceControls) {
      (snap.events || []).forEach(function (ev) { applyEvent(ev, true); });
      if (typeof snap.terminal === "boolean") setEnded(snap.terminal);
      Object.keys(snap.panels || {}).forEach(function (name) {
        var el = document.getElementById("panel-" + name);
        if (!el) return;
        if (name === "controls") {
          if (snap.controls_key === controlsKey && !forceControls) return;
          if (busy(el) && snap.controls_key === controlsKey) return;
          // Typed text is never replaced under the person's hands (_controls.js).
          if (Runyard.holdControls && Runyard.holdControls(el, snap.panels[name])) return;
          controlsKey = snap.controls_key;
        }
        // Unchanged (as this browser writes HTML; each render masks the CSRF token anew,
        // and either mask is valid): keep the panel's nodes, so a click or a hover on them
        // is not lost to a snapshot that would only draw them again.
        parsed.innerHTML = snap.panels[name];
        if (unmasked(parsed.innerHTML) === unmasked(el.innerHTML)) return;
        // A section the person opened stays open when the panel is rendered again, and a
        // step row that had the keyboard focus keeps it (the old row is gone with the HTML).
        var opened = Array.prototype.map.call(el.querySelectorAll("details[open][id]"), function (d) { return d.id; });
        var active = document.activeElement;
        var focusedStep = active && el.contains(active) && active.getAttribute ? active.getAttribute("data-step") : null;
        el.innerHTML = snap.panels[name];
        opened.forEach(function (id) {
          var d = document.getElementById(id);
          if (d && el.contains(d)) d.open = true;
        });
        if (focusedStep !== null) {
          var row = el.querySelector('[data-step="' + CSS.escape(focusedStep) + '"]');
          if (row) row.focus({ preventScroll: true });
        }
      });
      if (svg && snap.states) {
        svg.querySelectorAll(".dg-node").forEach(function (g) {
          var st = snap.states[g.getAttribute("data-node")] || "pending";
          if (g.getAttribute("data-state") !== st) g.setAttribute("data-state", st);
        });
      }
      if (liveOut) liveOut.reapply();
      var log2 = document.getElementById("event-log");
      if (log2 && follow && follow.checked) log2.scrollTop = log2.scrollHeight;
      document.dispatchEvent(new CustomEvent("runyard:snapshot"));
    }
    var forceNext = false;
    function load() {
      var force = forceNext;
      forceNext = false;
      return fetch(cfg.live_url + "?after=" + lastSeq, {
        credentials: "same-origin", headers: { Accept: "application/json" }
      })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
        .then(function (snap) { applySnapshot(snap, force); });
    }
    var refresh = debounce(load, 200);

    document.addEventListener("submit", function (e) {
      var form = e.target.closest ? e.target.closest("form[data-control]") : null;
      if (!form) return;
      e.preventDefault();
      if (form.getAttribute("data-confirm") && !window.confirm(form.getAttribute("data-confirm"))) return;
      var body = e.submitter ? new FormData(form, e.submitter) : new FormData(form);
      var buttons = form.querySelectorAll("button");
      buttons.forEach(function (b) { b.disabled = true; });
      var token = form.querySelector("input[name=csrfmiddlewaretoken]");
      var sent = false;
      // getAttribute: the cancel form's <select name="action"> shadows form.action.
      fetch(form.getAttribute("action"), {
        method: "POST", body: body, credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRFToken": token ? token.value : "" }
      })
        .then(function (r) {
          return r.json().catch(function () {
            return { ok: r.ok, message: r.ok ? "Done." : "The request failed (" + r.status + ")." };
          });
        })
        .then(function (res) {
          toast(res.message, res.ok);
          // A sent form is clean again; a refused one keeps what was typed in it.
          sent = !!res.ok;
          if (sent) form.reset();
        })
        .catch(function () { toast("The request did not reach the server.", false); })
        .then(function () {
          buttons.forEach(function (b) { b.disabled = false; });
          forceNext = sent;
          refresh.now();
        });
    });

    new Stream({
      path: cfg.ws_path,
      after: lastSeq,
      cursor: function (frame) { return frame.seq; },
      resumeAt: function () { return lastSeq; },
      onEvent: function (frame) { applyEvent(frame, false); },
      onLive: function (frame) { if (liveOut) liveOut.onLive(frame); },
      onSynced: function () { refresh(); },
      liveState: liveState,
      poll: function () { return load(); },
      pollEvery: 3000
    });
  };
})();
{% endverbatim %}
