/* Refreshes the dashboard body every 5 s. A poll starts only when the previous one has
   finished (the next is scheduled from its end), so slow answers never pile up. */
(function () {
  "use strict";
  var root = document.getElementById("queue-dashboard");
  var body = document.getElementById("dashboard-body");
  var button = document.getElementById("dashboard-pause");
  var state = document.getElementById("dashboard-state");
  var interval = 5000;
  var paused = false;
  var polling = false;
  var timer = null;
  var refreshes = 0;

  function schedule() {
    clearTimeout(timer);
    if (!paused) timer = setTimeout(poll, interval);
  }

  function poll() {
    if (polling || paused) return;
    polling = true;
    root.dataset.polling = "1";
    fetch(root.dataset.partialUrl, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        body.innerHTML = html;
        refreshes += 1;
        root.dataset.refreshes = String(refreshes);
        state.textContent = "Updated " + new Date().toLocaleTimeString();
      })
      .catch(function (error) {
        state.textContent = "Refresh failed (" + error.message + "); retrying";
      })
      .finally(function () {
        polling = false;
        root.dataset.polling = "0";
        schedule();
      });
  }

  button.addEventListener("click", function () {
    paused = !paused;
    button.textContent = paused ? "Resume auto-refresh" : "Pause auto-refresh";
    root.dataset.paused = paused ? "1" : "0";
    if (paused) {
      clearTimeout(timer);
      state.textContent = "Paused";
    } else {
      poll();
    }
  });

  schedule();
})();
