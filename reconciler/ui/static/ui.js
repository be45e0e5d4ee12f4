// The dashboard's one script: every few seconds it asks the server for the page's live region
// (?fragment=main) and swaps it in place, so phases, progress, curves and logs move without a
// reload. Without JavaScript the pages are complete, just not live. Nothing is fetched elsewhere.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var indicator = document.getElementById("live-state");
  var every = parseInt(document.body.getAttribute("data-refresh-ms") || "2000", 10);
  var etag = null;
  var refreshes = 0;
  document.body.setAttribute("data-loaded-at", String(Date.now()));

  function fragmentUrl() {
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "main");
    return url.toString();
  }

  function say(text, stale) {
    if (!indicator) { return; }
    indicator.textContent = text;
    indicator.className = "live-state" + (stale ? " stale" : "");
  }

  function swap(html) {
    var opened = Array.prototype.map.call(main.querySelectorAll("details"), function (d) { return d.open; });
    var log = document.getElementById("log");
    var followLog = !log || log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    var graph = main.querySelector(".graph-scroll");
    var graphLeft = graph ? graph.scrollLeft : 0;
    main.innerHTML = html;
    Array.prototype.forEach.call(main.querySelectorAll("details"), function (d, i) {
      if (i < opened.length) { d.open = opened[i]; }
    });
    log = document.getElementById("log");
    if (log && followLog) { log.scrollTop = log.scrollHeight; }
    graph = main.querySelector(".graph-scroll");
    if (graph) { graph.scrollLeft = graphLeft; }
    refreshes += 1;
    document.body.setAttribute("data-refreshes", String(refreshes));
  }

  function schedule() { window.setTimeout(refresh, every); }

  function refresh() {
    if (document.hidden) { schedule(); return; }
    var headers = {};
    if (etag) { headers["If-None-Match"] = etag; }
    fetch(fragmentUrl(), { headers: headers, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 304) { return; }
        if (response.status === 401) { throw new Error("the token is no longer accepted: reload"); }
        if (!response.ok && response.status !== 404) { throw new Error("HTTP " + response.status); }
        etag = response.headers.get("ETag");
        return response.text().then(swap);
      })
      .then(function () { say("live · " + new Date().toLocaleTimeString(), false); },
            function (error) { say("not updating: " + error.message, true); })
      .then(schedule);
  }

  var log = document.getElementById("log");
  if (log) { log.scrollTop = log.scrollHeight; }
  say("live", false);
  schedule();
}());
