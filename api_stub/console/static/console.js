// Live pages: on every event of the console's stream, re-fetch this page and swap its <main>.
// Served from the package; no framework, no build step, nothing from a CDN.
(function () {
  "use strict";
  var url = document.body.getAttribute("data-events");
  if (!url || !window.EventSource) { return; }
  var state = document.getElementById("live-state");
  var pending = null;
  var TYPES = ["contact.active", "contact.failed", "contact.grace_period", "contact.deleted",
               "contact.deleting", "contact.provisioning"];

  function refresh() {
    pending = null;
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        var main = document.getElementById("live");
        // Keep what the operator is typing or pressing: swap only when no form has focus.
        if (fresh && main && !main.contains(document.activeElement)) {
          main.innerHTML = fresh.innerHTML;
        }
      })
      .catch(function () {});
  }

  function schedule() {
    if (pending === null) { pending = window.setTimeout(refresh, 250); }
  }

  var source = new EventSource(url);
  source.onopen = function () { if (state) { state.textContent = "●"; state.title = "live"; } };
  source.onerror = function () { if (state) { state.textContent = "○"; state.title = "reconnecting"; } };
  source.onmessage = schedule;
  TYPES.forEach(function (type) { source.addEventListener(type, schedule); });
  // Between events (a contact that only moves to provisioning sends none), a slow refresh.
  window.setInterval(schedule, 5000);
})();
