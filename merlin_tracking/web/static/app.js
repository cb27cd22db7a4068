// merlin_tracking dashboard: refresh the live part of the page from the same address.
// The server renders (and escapes) the HTML; this script only swaps it in, about once a second.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !live.dataset.poll) { return; }
  var every = parseInt(live.dataset.poll, 10) || 1000;
  var stamp = document.getElementById("updated");
  var last = live.innerHTML;
  function address() {
    var url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    return url.toString();
  }
  function tick() {
    fetch(address(), { headers: { "Accept": "text/html" }, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        if (html !== last) { live.innerHTML = html; last = html; }
        if (stamp) { stamp.textContent = "updated " + new Date().toLocaleTimeString(); }
      })
      .catch(function (err) {
        if (stamp) { stamp.textContent = "not updated: " + err.message; }
      })
      .finally(function () { window.setTimeout(tick, every); });
  }
  window.setTimeout(tick, every);
})();
