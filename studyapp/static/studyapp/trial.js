// Enhances the trial form, which works as a plain POST without it: type-to-filter, keyboard
// choice, a guard against double submits, and the client-side response time.
(function () {
  "use strict";
  var form = document.getElementById("trial-form");
  if (!form) return;
  var image = document.getElementById("subject");
  var rtField = form.querySelector('input[name="rt_client_ms"]');
  var filterBox = form.querySelector(".filter");
  var filter = document.getElementById("filter");
  var noMatch = form.querySelector(".no-match");
  var choices = Array.prototype.slice.call(form.querySelectorAll(".choices .choice"));
  var examples = Array.prototype.slice.call(document.querySelectorAll(".gallery .example"));
  var shownAt = null;
  var sent = false;

  // Response time runs from the moment the image is there to the click.
  if (image.complete && image.naturalWidth) {
    // Loaded before this script ran: Resource Timing knows when, on the same clock as performance.now().
    var entry = performance.getEntriesByName ? performance.getEntriesByName(image.currentSrc || image.src)[0] : null;
    shownAt = entry && entry.responseEnd ? entry.responseEnd : performance.now();
  } else {
    image.addEventListener("load", function () { shownAt = performance.now(); });
  }

  function nameOf(el) { return el.textContent.trim().toLowerCase(); }
  function visibleChoices() { return choices.filter(function (b) { return !b.hidden; }); }

  function applyFilter() {
    var query = filter.value.trim().toLowerCase();
    var shown = 0;
    choices.forEach(function (b) {
      b.hidden = query !== "" && nameOf(b).indexOf(query) === -1;
      if (!b.hidden) shown++;
    });
    examples.forEach(function (e) { e.hidden = query !== "" && nameOf(e).indexOf(query) === -1; });
    noMatch.hidden = shown !== 0;
  }

  function columns(list) {
    var n = 0;
    while (n < list.length && list[n].offsetTop === list[0].offsetTop) n++;
    return Math.max(n, 1);
  }

  function typeIntoFilter(ch) {
    filter.value += ch;
    applyFilter();
    filter.focus();
  }

  filterBox.hidden = false;
  filter.addEventListener("input", applyFilter);
  filter.addEventListener("keydown", function (ev) {
    var shown = visibleChoices();
    if (ev.key === "Enter") {
      // Never the browser's implicit submit: that would send whichever button comes first.
      ev.preventDefault();
      var query = filter.value.trim().toLowerCase();
      var exact = shown.filter(function (b) { return nameOf(b) === query; });
      if (shown.length === 1) shown[0].click();
      else if (exact.length === 1) exact[0].click();
    } else if (ev.key === "ArrowDown" && shown.length) {
      ev.preventDefault();
      shown[0].focus();
    } else if (ev.key === "Escape") {
      filter.value = "";
      applyFilter();
    }
  });

  document.addEventListener("keydown", function (ev) {
    if (ev.target === filter || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var shown = visibleChoices();
    var i = shown.indexOf(ev.target);
    var step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(shown), ArrowUp: -columns(shown) }[ev.key];
    if (i !== -1 && step) {
      ev.preventDefault();
      var j = i + step;
      if (j < 0) filter.focus();
      else shown[Math.min(j, shown.length - 1)].focus();
    } else if (ev.key.length === 1 && ev.key !== " " && !/^(INPUT|TEXTAREA|SELECT)$/.test(ev.target.tagName)) {
      ev.preventDefault();
      typeIntoFilter(ev.key);
    }
  });

  form.addEventListener("submit", function (ev) {
    if (sent) { ev.preventDefault(); return; }
    sent = true;
    if (shownAt !== null) rtField.value = String(Math.round(performance.now() - shownAt));
    form.classList.add("sending");
  });
  // A page restored from the back-forward cache must be answerable again (the server keeps the first answer).
  window.addEventListener("pageshow", function (ev) {
    if (ev.persisted) { sent = false; form.classList.remove("sending"); }
  });

  // On a phone the keyboard would cover the image: focus the filter only with a real pointer.
  if (window.matchMedia && window.matchMedia("(pointer: fine)").matches) filter.focus({ preventScroll: true });
})();
