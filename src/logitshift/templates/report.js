// logitshift report: sortable tables, click-to-zoom images, panel filter. No dependencies.
(function () {
  "use strict";
  // Images embedded once and reused elsewhere: copy the data URI from the first copy.
  document.querySelectorAll("img[data-same]").forEach(function (img) {
    var src = document.getElementById(img.getAttribute("data-same"));
    if (src) img.src = src.src;
  });

  // Sortable tables: click (or Enter on) a header; numbers sort by their data-v value.
  function key(cell) {
    var v = cell.getAttribute("data-v");
    if (v === null) v = cell.textContent.trim();
    var n = parseFloat(v);
    return isNaN(n) || !/^[-+.\deE]+$/.test(v) ? { n: false, v: v.toLowerCase() } : { n: true, v: n };
  }
  function sortBy(table, th, index) {
    var asc = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[index]), y = key(b.cells[index]);
      var c = x.n && y.n ? x.v - y.v : x.n ? -1 : y.n ? 1 : x.v < y.v ? -1 : x.v > y.v ? 1 : 0;
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th, i) {
      th.tabIndex = 0;
      th.title = "sort by this column";
      th.addEventListener("click", function () { sortBy(table, th, i); });
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") sortBy(table, th, i); });
    });
  });

  // Zoom: click an image to see it large; click anywhere or press Escape to close.
  var box = document.getElementById("lightbox");
  var big = box.querySelector("img");
  var caption = box.querySelector("p");
  function close() { box.hidden = true; big.removeAttribute("src"); }
  document.addEventListener("click", function (e) {
    var t = e.target;
    if (t.tagName === "IMG" && t.classList.contains("zoom") && t.src) {
      big.src = t.src;
      big.alt = t.alt;
      caption.textContent = t.alt || "";
      box.hidden = false;
    } else if (!box.hidden && box.contains(t)) {
      close();
    }
  });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape" && !box.hidden) close(); });

  // Panel filter: show only panels whose image or class matches the text.
  var filter = document.getElementById("panel-filter");
  if (filter) {
    var count = document.getElementById("panel-count");
    filter.addEventListener("input", function () {
      var q = filter.value.trim().toLowerCase(), shown = 0;
      document.querySelectorAll(".panel").forEach(function (p) {
        var hit = !q || (p.getAttribute("data-key") || "").indexOf(q) >= 0;
        p.classList.toggle("hidden", !hit);
        if (hit) shown++;
      });
      if (count) count.textContent = shown + " shown";
    });
  }
})();
