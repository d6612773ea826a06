// The screen gate, before consent: a window smaller than the study asks for, or a phone where the study
// takes none, sees a page saying so instead of the consent form, and nothing is sent or recorded. The
// window's size goes with the consent form, so the server checks it again.
(function () {
  "use strict";
  var consent = document.getElementById("consent");
  var gate = document.getElementById("screen-gate");
  if (!consent || !gate) return;
  var minWidth = parseInt(consent.getAttribute("data-min-width"), 10) || 0;
  var minHeight = parseInt(consent.getAttribute("data-min-height"), 10) || 0;
  var phonesAllowed = consent.getAttribute("data-phones") === "1";
  var form = consent.querySelector("form");

  function isPhone() {
    if (navigator.userAgentData && typeof navigator.userAgentData.mobile === "boolean") {
      return navigator.userAgentData.mobile;
    }
    return /iPhone|iPod|Android.+Mobile|Windows Phone|Mobi/.test(navigator.userAgent);
  }

  function check() {
    var width = window.innerWidth;
    var height = window.innerHeight;
    var phone = isPhone();
    form.querySelector('input[name="window_width"]').value = String(width);
    form.querySelector('input[name="window_height"]').value = String(height);
    form.querySelector('input[name="phone"]').value = phone ? "1" : "0";
    var fits = width >= minWidth && height >= minHeight && (phonesAllowed || !phone);
    consent.hidden = !fits;
    gate.hidden = fits;
  }

  check();
  // A participant who enlarges the window (or zooms out) gets the consent form back.
  window.addEventListener("resize", check);
})();
