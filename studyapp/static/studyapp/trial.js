// Enhances the trial form, which works as a plain POST without it.
//
// Timing: the trial starts only when the photo and every example photo are decoded. Until then the
// answers are hidden (CSS: data-state="loading"); once decoded they are shown, and the response clock
// starts in the next animation frame, the one that paints them. Sent with the answer, on the page's
// performance.now() clock: images_ready_ms, clock_start_ms (>= images_ready_ms), rt_client_ms (clock start
// to click), and attention while the clock ran: blur_count (window blurs: other tab, other window) and
// hidden_ms (time the page was hidden). The next trial's photo is prefetched once this one runs.
//
// Also: type-to-filter, arrow keys between answers, Enter, a guard against double submits, and the
// "enlarge" dialog of an answer card's example photos.
(function () {
  "use strict";
  var form = document.getElementById("trial-form");
  if (!form) return;
  var image = document.getElementById("subject");
  var filterBox = document.querySelector(".filter");
  var filter = document.getElementById("filter");
  var noMatch = document.querySelector(".no-match");
  var choices = Array.prototype.slice.call(form.querySelectorAll(".choices .choice"));
  var items = choices.map(function (b) { return b.closest(".card-wrap") || b; });
  var examples = Array.prototype.slice.call(form.querySelectorAll(".choices img"));
  var readyAt = null;
  var clockStart = null;
  var blurs = 0;
  var hiddenMs = 0;
  var hiddenSince = null;
  var sent = false;
  var prefetched = null;

  function field(name, value) {
    var input = form.querySelector('input[name="' + name + '"]');
    if (input) input.value = value === null ? "" : String(Math.round(value));
  }

  function decoded(img) {
    if (img.decode) return img.decode();
    return new Promise(function (resolve, reject) {
      if (img.complete && img.naturalWidth) resolve();
      img.addEventListener("load", resolve);
      img.addEventListener("error", reject);
    });
  }

  function start(ok) {
    if (ok) readyAt = performance.now();
    form.setAttribute("data-state", "ready");
    window.requestAnimationFrame(function () {
      // This callback runs in the frame that first paints the photo: the clock starts here.
      clockStart = performance.now();
      form.setAttribute("data-clock", "running");
      if (document.visibilityState === "hidden") hiddenSince = clockStart;
      var next = form.getAttribute("data-next-image");
      if (next) {
        prefetched = new Image();
        prefetched.src = next;
      }
      if (window.matchMedia && window.matchMedia("(pointer: fine)").matches && filter) {
        // On a phone the keyboard would cover the photo: focus the filter only with a real pointer.
        filter.focus({ preventScroll: true });
      }
    });
  }

  Promise.all([image].concat(examples).map(decoded)).then(function () { start(true); }, function () {
    // An image that cannot be decoded: show the trial anyway (it can still be answered), without a ready time.
    start(false);
  });

  window.addEventListener("blur", function () { if (clockStart !== null && !sent) blurs++; });
  document.addEventListener("visibilitychange", function () {
    if (clockStart === null || sent) return;
    if (document.visibilityState === "hidden") hiddenSince = performance.now();
    else if (hiddenSince !== null) { hiddenMs += performance.now() - hiddenSince; hiddenSince = null; }
  });

  function nameOf(el) { return (el.querySelector(".card-name") || el).textContent.trim().toLowerCase(); }
  function visibleChoices() { return choices.filter(function (b, i) { return !items[i].hidden; }); }

  function applyFilter() {
    var query = filter.value.trim().toLowerCase();
    var shown = 0;
    choices.forEach(function (b, i) {
      items[i].hidden = query !== "" && nameOf(b).indexOf(query) === -1;
      if (!items[i].hidden) shown++;
    });
    noMatch.hidden = shown !== 0;
  }

  function columns(list) {
    var n = 0;
    var top = list.length ? list[0].getBoundingClientRect().top : 0;
    while (n < list.length && Math.abs(list[n].getBoundingClientRect().top - top) < 4) n++;
    return Math.max(n, 1);
  }

  if (filter) {
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
  }

  var dialog = document.getElementById("enlarged");
  document.addEventListener("keydown", function (ev) {
    if (ev.target === filter || ev.ctrlKey || ev.metaKey || ev.altKey || (dialog && dialog.open)) return;
    var shown = visibleChoices();
    var i = shown.indexOf(ev.target);
    var step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(shown), ArrowUp: -columns(shown) }[ev.key];
    if (i !== -1 && step) {
      ev.preventDefault();
      var j = i + step;
      if (j < 0 && filter) filter.focus();
      else shown[Math.max(0, Math.min(j, shown.length - 1))].focus();
    } else if (filter && ev.key.length === 1 && ev.key !== " " && !/^(INPUT|TEXTAREA|SELECT)$/.test(ev.target.tagName)) {
      ev.preventDefault();
      filter.value += ev.key;
      applyFilter();
      filter.focus();
    }
  });

  if (dialog) {
    var title = document.getElementById("enlarged-name");
    var photos = dialog.querySelector(".enlarged-photos");
    var choose = document.getElementById("enlarged-choose");
    var opener = null;
    form.addEventListener("click", function (ev) {
      var button = ev.target.closest(".enlarge");
      if (!button) return;
      var answer = button.closest(".card-wrap").querySelector(".card-answer");
      opener = button;
      title.textContent = answer.querySelector(".card-name").textContent;
      photos.textContent = "";
      Array.prototype.forEach.call(answer.querySelectorAll("img"), function (img) {
        var big = img.cloneNode();
        big.alt = "";
        photos.appendChild(big);
      });
      choose.name = "choice";
      choose.value = answer.value;
      dialog.showModal();
      choose.focus();
    });
    document.getElementById("enlarged-close").addEventListener("click", function () { dialog.close(); });
    dialog.addEventListener("close", function () { if (opener) opener.focus(); });
  }

  form.addEventListener("submit", function (ev) {
    if (sent || form.getAttribute("data-state") !== "ready") { ev.preventDefault(); return; }
    sent = true;
    var now = performance.now();
    if (hiddenSince !== null) hiddenMs += now - hiddenSince;
    field("images_ready_ms", readyAt);
    field("clock_start_ms", clockStart);
    field("rt_client_ms", clockStart === null ? null : now - clockStart);
    field("blur_count", clockStart === null ? null : blurs);
    field("hidden_ms", clockStart === null ? null : hiddenMs);
    form.classList.add("sending");
  });
  // A page restored from the back-forward cache must be answerable again (the server keeps the first answer).
  window.addEventListener("pageshow", function (ev) {
    if (ev.persisted) { sent = false; form.classList.remove("sending"); }
  });
})();
