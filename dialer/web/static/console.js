// The console's live parts. An element with data-live="URL" is refreshed every
// data-every milliseconds (default 1000) with the HTML the server renders at URL: the
// same template as the page, rendered alone, escaped by the server like the rest.
// Refreshes pause while the tab is hidden. A session that ended reloads the page (the
// server then shows the login form). Nothing else runs here: forms post as forms.
(function () {
  "use strict";

  function note(stale) {
    document.querySelectorAll(".stale-note").forEach(function (el) {
      el.hidden = !stale;
    });
  }

  function follow(el) {
    var every = parseInt(el.getAttribute("data-every") || "1000", 10);
    var url = el.getAttribute("data-live");
    var timer = null;
    var busy = false;

    function schedule() {
      clearTimeout(timer);
      if (!el.hasAttribute("data-stop")) {
        timer = setTimeout(refresh, every);
      }
    }

    function refresh() {
      if (document.hidden) { schedule(); return; }
      if (busy) { return; }
      busy = true;
      fetch(url, {
        credentials: "same-origin",
        headers: { "X-Live": "1", "Accept": "text/html" },
        cache: "no-store",
        redirect: "error"
      }).then(function (response) {
        if (response.status === 401 || response.status === 403) {
          window.location.reload();
          return null;
        }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      }).then(function (html) {
        if (html === null) { return; }
        el.innerHTML = html;
        el.setAttribute("data-updated", String(Date.now()));
        // A part that says it will not change again (an import that ended).
        if (el.querySelector("[data-stop-live]")) {
          el.setAttribute("data-stop", "1");
        }
        note(false);
      }).catch(function () {
        note(true);
      }).then(function () {
        busy = false;
        schedule();
      });
    }

    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) { refresh(); }
    });
    schedule();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(follow);
  });
})();
