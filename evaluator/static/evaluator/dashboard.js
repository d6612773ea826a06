// Study dashboard and planning pages: load the live precision (computed or cached on the server) into its box,
// and follow a planning simulation's progress until it has finished, then show its result.
(function () {
  "use strict";
  var live = document.getElementById("live-precision");
  if (live) {
    live.setAttribute("aria-busy", "true");
    live.insertAdjacentHTML("afterbegin", "<p class=\"help\">Computing the live precision…</p>");
    fetch(live.getAttribute("data-url"), { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
      .then(function (html) { live.innerHTML = html; live.removeAttribute("aria-busy"); })
      .catch(function (e) { live.insertAdjacentText("beforeend", "Could not load it (" + e.message + ")."); });
  }
  var plan = document.getElementById("plan-progress");
  if (plan) {
    var bar = plan.querySelector("progress");
    var text = plan.querySelector("[data-field=text]");
    var poll = function () {
      fetch(plan.getAttribute("data-url"), { credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (p) {
          bar.max = p.steps_total; bar.value = p.steps_done;
          text.textContent = p.status + ": " + p.steps_done + " of " + p.steps_total + " sizes simulated" +
            (p.waiting_for_worker ? " (waiting for a worker: is one running?)" : "");
          if (p.status === "done" || p.status === "failed") { window.location.reload(); }
          else { window.setTimeout(poll, 2000); }
        })
        .catch(function () { window.setTimeout(poll, 5000); });
    };
    poll();
  }
})();
