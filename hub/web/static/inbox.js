// Live inbox: new results arrive over server-sent events and are put where the queue's ordering puts
// them (newest: on top; attention / risk: by the same keys as the server), no reload.
(function () {
  "use strict";
  const table = document.getElementById("results");
  const live = document.getElementById("live");
  if (!table || !table.dataset.events || !window.EventSource) { return; }
  const body = table.tBodies[0];
  const total = document.getElementById("total");
  const sort = table.dataset.sort || "newest";
  const pageSize = 50;

  function key(row) {
    const d = row.dataset;
    return { rank: parseInt(d.rank, 10), pm: parseFloat(d.pm), created: d.created, id: parseInt(d.id, 10) };
  }
  // Negative when a comes first (the server's ORDER BY for each sort, see hub/web/inbox.py).
  function compare(a, b) {
    if (sort === "newest") { return b.id - a.id; }
    if (sort === "attention" && a.rank !== b.rank) { return a.rank - b.rank; }
    if (a.pm !== b.pm) { return b.pm - a.pm; }
    if (a.created !== b.created) { return a.created < b.created ? -1 : 1; }
    return a.id - b.id;
  }
  function place(row) {
    const k = key(row);
    const rows = Array.from(body.rows);
    const before = rows.find(function (other) { return compare(k, key(other)) < 0; });
    if (before) { body.insertBefore(row, before); return true; }
    if (table.dataset.full === "yes" || rows.length >= pageSize) { return false; }  // belongs on a later page
    body.appendChild(row);
    return true;
  }

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
    const shown = place(row);
    const empty = document.getElementById("empty");
    if (empty && shown) { empty.remove(); }
    const n = parseInt((total.textContent || "").replace(/,/g, ""), 10);
    if (!isNaN(n)) { total.textContent = (n + 1).toLocaleString("en-US"); }
    if (shown) { window.setTimeout(function () { row.classList.remove("fresh"); }, 4000); }
  });
})();
