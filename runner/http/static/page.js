// The status page's only script, served by the runner itself so the page's
// Content-Security-Policy allows no inline or third-party code.
(function () {
  "use strict";

  // The token: kept for this tab only, sent in each button's form body, never as a cookie.
  var field = document.getElementById("token");
  if (field) {
    field.value = sessionStorage.getItem("runner-token") || "";
    field.addEventListener("input", function () {
      sessionStorage.setItem("runner-token", field.value);
    });
  }
  document.querySelectorAll("form.action").forEach(function (form) {
    form.addEventListener("submit", function () {
      form.elements.token.value = field ? field.value : "";
    });
  });

  // Times: the server writes absolute UTC; here they become "in 5 s" / "3 h ago", with the
  // moment in this browser's zone on hover.
  var UNITS = [["d", 86400], ["h", 3600], ["min", 60], ["s", 1]];
  function relative(seconds) {
    var size = Math.abs(seconds);
    if (size < 1) { return "now"; }
    for (var i = 0; i < UNITS.length; i++) {
      if (size >= UNITS[i][1]) {
        var text = Math.floor(size / UNITS[i][1]) + " " + UNITS[i][0];
        return seconds > 0 ? "in " + text : text + " ago";
      }
    }
    return "now";
  }
  function rewrite() {
    var now = Date.now();
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      var moment = new Date(el.getAttribute("datetime"));
      if (isNaN(moment.getTime())) { return; }
      if (!el.dataset.utc) { el.dataset.utc = el.textContent; }
      el.textContent = relative(Math.round((moment.getTime() - now) / 1000));
      el.title = moment.toLocaleString() + " (" +
        Intl.DateTimeFormat().resolvedOptions().timeZone + "), " + el.dataset.utc;
    });
  }
  rewrite();
  setInterval(rewrite, 1000);

  // Reload now and then (?refresh=SECONDS, 0 = never), unless the token is being typed.
  var every = parseInt(document.body.dataset.refresh, 10);
  if (every > 0) {
    setInterval(function () {
      if (document.activeElement !== field) {
        location.replace(document.body.dataset.page);
      }
    }, every * 1000);
  }
})();
