// Keeps the dashboard current without reloading the page: every 2 s, re-fetch each
// [data-live] region's fragment and swap it in. The fragments are rendered (and escaped)
// by the server, so they are inserted as they come. A 401 means the sign-in expired.
(function () {
  "use strict";
  var PERIOD_MS = 2000;
  var state = document.getElementById("live-state");

  function show(text, stale) {
    if (!state) return;
    state.textContent = text;
    state.classList.toggle("stale", stale);
  }

  async function refresh(region) {
    var response = await fetch(region.dataset.live, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "text/html" },
    });
    if (response.status === 401) {
      window.location.assign("/ui/login");
      return;
    }
    if (!response.ok) throw new Error("HTTP " + response.status);
    region.innerHTML = await response.text();
  }

  async function tick() {
    if (!document.hidden) {
      try {
        await Promise.all(Array.from(document.querySelectorAll("[data-live]"), refresh));
        show("live · updated " + new Date().toLocaleTimeString(), false);
      } catch (err) {
        show("offline · retrying (" + err.message + ")", true);
      }
    }
    window.setTimeout(tick, PERIOD_MS);
  }

  show("live", false);
  window.setTimeout(tick, PERIOD_MS);
})();
