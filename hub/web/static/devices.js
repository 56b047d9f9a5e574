// Devices page: re-fetch the server-rendered table every few seconds.
(function () {
  "use strict";
  const holder = document.getElementById("devices");
  if (!holder) { return; }
  const every = parseInt(holder.dataset.refreshMs, 10) || 5000;
  async function refresh() {
    try {
      const response = await fetch("/devices/table", { credentials: "same-origin", cache: "no-store" });
      if (response.redirected || response.status === 401) { window.location.assign("/login"); return; }
      if (response.ok) { holder.innerHTML = await response.text(); holder.dataset.refreshed = Date.now(); }
    } catch (err) { /* network blip: try again next time */ }
    window.setTimeout(refresh, every);
  }
  window.setTimeout(refresh, every);
})();
