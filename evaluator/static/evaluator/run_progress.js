// Polls the run's progress.json and updates the page until the run has finished.
(function () {
  "use strict";
  var box = document.getElementById("run-progress");
  if (!box) return;
  var bar = document.getElementById("run-bar");
  var finished = { done: true, failed: true, cancelled: true };
  function show(data) {
    box.querySelectorAll("[data-field]").forEach(function (el) {
      var value = data[el.getAttribute("data-field")];
      el.textContent = value === null || value === undefined ? "–" : String(value);
    });
    bar.max = data.items_total;
    bar.value = data.items_done;
    return finished[data.status];
  }
  function poll() {
    fetch(box.getAttribute("data-url"), { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (data) { if (!show(data)) window.setTimeout(poll, 2000); })
      .catch(function () { window.setTimeout(poll, 5000); });
  }
  poll();
})();
