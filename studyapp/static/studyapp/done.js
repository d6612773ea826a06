// Sends the participant on to the recruiter's completion page after a short countdown.
// The page only exists once every answer is saved; the link works without this script.
(function () {
  "use strict";
  var link = document.querySelector("a[data-redirect-seconds]");
  if (!link) return;
  var left = parseInt(link.getAttribute("data-redirect-seconds"), 10) || 5;
  var note = document.querySelector(".redirect-note");
  var counter = document.querySelector(".redirect-countdown");
  note.hidden = false;
  var timer = window.setInterval(function () {
    left -= 1;
    counter.textContent = String(Math.max(left, 0));
    if (left <= 0) {
      window.clearInterval(timer);
      window.location.assign(link.href);
    }
  }, 1000);
})();
