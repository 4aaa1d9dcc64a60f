// Progressive enhancement only: the page works without it (see the noscript link).
// 1. The launch page moves on with location.replace, so the launch token leaves history.
// 2. While an export is queued or running, the exports section refreshes itself.
(function () {
  "use strict";
  var next = document.body.getAttribute("data-next");
  if (next) {
    window.location.replace(next);
    return;
  }
  function schedule() {
    var section = document.getElementById("exports");
    var seconds = section && parseFloat(section.getAttribute("data-refresh"));
    if (seconds > 0) {
      window.setTimeout(refresh, seconds * 1000);
    }
  }
  function refresh() {
    fetch(window.location.pathname + window.location.search, {
      credentials: "same-origin",
      headers: { Accept: "text/html" },
    })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("exports");
        var section = document.getElementById("exports");
        if (fresh && section && fresh.innerHTML !== section.innerHTML) {
          section.innerHTML = fresh.innerHTML;
          var attr = fresh.getAttribute("data-refresh");
          if (attr) { section.setAttribute("data-refresh", attr); }
          else { section.removeAttribute("data-refresh"); }
        }
        schedule();
      })
      .catch(function () {
        window.setTimeout(refresh, 15000); // the service may be restarting: try later
      });
  }
  schedule();
})();
