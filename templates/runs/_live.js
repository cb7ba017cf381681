{% verbatim %}
/* Live progress inside a step (runs/live_frames.py): tokens streaming into each node's output
   and parallel branches marked running, from the run stream's "live" frames, which have no seq.
   They are provisional: when the step commits, its stored events (with seq) arrive and replace
   them, so a reconnect or a late frame never leaves duplicated text. Plain ES2017. */
(function () {
  "use strict";
  var Runyard = (window.Runyard = window.Runyard || {});

  Runyard.liveOutput = function (opts) {
    var box = document.getElementById("live-output");
    var blocks = {}; // node -> its output block
    var states = {}; // node -> the state live frames gave it, until its step is stored
    var committed = 0; // the highest step index whose events are stored

    function block(name) {
      if (blocks[name]) return blocks[name];
      var el = document.createElement("div");
      el.className = "live-node";
      el.setAttribute("data-node", name);
      var head = document.createElement("div");
      head.className = "live-head";
      var title = document.createElement("span");
      title.className = "mono";
      title.textContent = name;
      var badge = document.createElement("span");
      badge.className = "live-state";
      head.appendChild(title);
      head.appendChild(badge);
      var pre = document.createElement("pre");
      pre.className = "live-text";
      pre.setAttribute("aria-live", "off");
      var text = document.createTextNode("");
      pre.appendChild(text);
      el.appendChild(head);
      el.appendChild(pre);
      if (box) {
        box.appendChild(el);
        box.hidden = false;
      }
      blocks[name] = { el: el, pre: pre, text: text, badge: badge, step: null };
      return blocks[name];
    }
    function mark(b, state) {
      b.el.setAttribute("data-state", state);
      b.badge.textContent = state === "streaming" ? "streaming…" : state;
    }
    function setNode(name, state, step) {
      if (typeof name !== "string") return;
      states[name] = { state: state, step: step };
      opts.setNode(name, state);
    }
    function atBottom(el) { return el.scrollHeight - el.scrollTop - el.clientHeight < 24; }

    function onLive(frame) {
      var d = frame.data || {};
      if (typeof d.step === "number" && d.step <= committed) return; // stored already
      switch (frame.event) {
        case "llm.delta":
          if (typeof d.node !== "string") return;
          var b = block(d.node);
          if (b.step !== d.step) { b.text.data = ""; b.step = d.step; }
          var follow = atBottom(b.pre);
          b.text.appendData(String(d.text || ""));
          if (follow) b.pre.scrollTop = b.pre.scrollHeight;
          mark(b, "streaming");
          setNode(d.node, "running", d.step);
          break;
        case "branch.started": setNode(d.branch, "running", d.step); break;
        case "branch.completed": setNode(d.branch, "completed", d.step); break;
        case "branch.failed": setNode(d.branch, "failed", d.step); break;
      }
    }

    function onEvent(ev) {
      var d = ev.data || {};
      if (ev.event === "llm.delta" && typeof d.node === "string") {
        var b = block(d.node);
        b.text.data = String(d.text || ""); // the whole text, as stored
        mark(b, "done");
      } else if (ev.event === "step.completed" || ev.event === "step.failed") {
        if (typeof d.index === "number" && d.index > committed) committed = d.index;
        Object.keys(states).forEach(function (name) {
          // Frames of a later step may have come before this step's stored events.
          if (!(states[name].step > committed)) delete states[name];
        });
        Object.keys(blocks).forEach(function (name) {
          var b = blocks[name];
          if (b.el.getAttribute("data-state") === "streaming" && !(b.step > committed)) mark(b, ev.event === "step.failed" ? "failed" : "done");
        });
      }
    }

    /* A snapshot drew node states from what is stored: put back what live frames showed. */
    function reapply() {
      Object.keys(states).forEach(function (name) { opts.setNode(name, states[name].state); });
    }

    return { onLive: onLive, onEvent: onEvent, reapply: reapply };
  };
})();
{% endverbatim %}
