// Live inbox: new results arrive over server-sent events and are prepended, no reload.
(function () {
  "use strict";
  const table = document.getElementById("results");
  const live = document.getElementById("live");
  if (!table || !table.dataset.events || !window.EventSource) { return; }
  const body = table.tBodies[0];
  const total = document.getElementById("total");
  const source = new EventSource(table.dataset.events);
  source.addEventListener("open", function () { live.dataset.state = "on"; live.textContent = "live"; });
  source.addEventListener("error", function () { live.dataset.state = "off"; live.textContent = "reconnecting…"; });
  source.addEventListener("logout", function () { source.close(); window.location.assign("/login"); });
  source.addEventListener("result", function (event) {
    const message = JSON.parse(event.data);
    if (body.querySelector('tr[data-id="' + message.id + '"]')) { return; }
    const holder = document.createElement("tbody");
    holder.innerHTML = message.html;  // server-rendered, autoescaped by Jinja2
    const row = holder.firstElementChild;
    body.insertBefore(row, body.firstElementChild);
    const empty = document.getElementById("empty");
    if (empty) { empty.remove(); }
    const n = parseInt((total.textContent || "").replace(/,/g, ""), 10);
    if (!isNaN(n)) { total.textContent = (n + 1).toLocaleString("en-US"); }
    window.setTimeout(function () { row.classList.remove("fresh"); }, 4000);
  });
})();
