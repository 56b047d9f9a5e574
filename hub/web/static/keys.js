// Keyboard work through a queue. Inbox (and exam, escalation) tables: j / k (or the down / up arrow keys) move
// between rows, Enter opens,
// x ticks the row for a bulk review. Result page: j / k (or the arrow keys) go to the next / previous result
// in the queue. Keys are ignored while typing in a field.
(function () {
  "use strict";
  function typing(target) {
    return target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT|BUTTON)$/.test(target.tagName));
  }
  const picked = document.getElementById("picked");
  function countPicked() {
    if (picked) { picked.textContent = document.querySelectorAll('input[type=checkbox][form=bulk]:checked').length; }
  }
  document.addEventListener("change", function (event) {
    if (event.target && event.target.getAttribute("form") === "bulk") { countPicked(); }
  });

  const next = document.getElementById("next");
  const prev = document.getElementById("prev");
  const table = document.querySelector("table.results");
  function rows() { return table ? Array.from(table.tBodies[0].rows).filter(function (r) { return r.dataset.id; }) : []; }
  function current() { return table ? table.querySelector("tr.focused") : null; }
  function focusRow(row) {
    const old = current();
    if (old) { old.classList.remove("focused"); old.removeAttribute("aria-selected"); }
    row.classList.add("focused");
    row.setAttribute("aria-selected", "true");
    row.scrollIntoView({ block: "nearest" });
  }
  function move(step) {
    const all = rows();
    if (!all.length) { return; }
    const at = all.indexOf(current());
    focusRow(all[Math.max(0, Math.min(all.length - 1, at < 0 ? 0 : at + step))]);
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) { return; }
    const k = event.key;
    if (next || prev) {  // the result page
      if ((k === "j" || k === "ArrowRight") && next) { window.location.assign(next.href); event.preventDefault(); }
      if ((k === "k" || k === "ArrowLeft") && prev) { window.location.assign(prev.href); event.preventDefault(); }
      return;
    }
    if (k === "j" || k === "ArrowDown") { move(1); event.preventDefault(); }
    else if (k === "k" || k === "ArrowUp") { move(-1); event.preventDefault(); }
    else if (k === "Enter" && current()) {
      const link = current().querySelector("a.open");
      if (link) { window.location.assign(link.href); event.preventDefault(); }
    } else if (k === "x" && current()) {
      const box = current().querySelector("input[type=checkbox]");
      if (box) { box.checked = !box.checked; countPicked(); event.preventDefault(); }
    }
  });
})();
