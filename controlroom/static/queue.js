// The review queue: keyboard moves over the thumbnails, selection for bulk reject, new
// alerts appended live (the queue is oldest first).
(function () {
  var grid = document.getElementById("queue");
  if (!grid) return;
  var bulk = document.getElementById("bulk");
  var nSel = document.getElementById("n-selected");
  var bulkBtn = document.getElementById("bulk-reject");
  var all = document.getElementById("select-all");
  var empty = document.getElementById("queue-empty");
  var current = 0;

  function thumbs() { return Array.prototype.slice.call(grid.querySelectorAll(".thumb")); }
  function mark(i) {
    var t = thumbs();
    if (!t.length) return;
    current = Math.max(0, Math.min(i, t.length - 1));
    t.forEach(function (el, k) { el.classList.toggle("current", k === current); });
    var link = t[current].querySelector("a.open");
    link.focus({preventScroll: true});
    t[current].scrollIntoView({block: "nearest"});
  }
  function columns() {
    var t = thumbs(); if (t.length < 2) return 1;
    var top = t[0].offsetTop, n = 0;
    for (var k = 0; k < t.length && t[k].offsetTop === top; k++) n++;
    return n;
  }
  function updateSel() {
    var n = grid.querySelectorAll("input[type=checkbox]:checked").length;
    nSel.textContent = String(n);
    bulkBtn.disabled = n === 0;
    thumbs().forEach(function (el) { el.classList.toggle("selected", el.querySelector("input").checked); });
  }
  grid.addEventListener("change", updateSel);
  all.addEventListener("change", function () {
    grid.querySelectorAll("input[type=checkbox]").forEach(function (c) { c.checked = all.checked; });
    updateSel();
  });
  grid.addEventListener("focusin", function (ev) {
    var t = thumbs(), k = t.indexOf(ev.target.closest(".thumb"));
    if (k >= 0 && k !== current) { current = k; t.forEach(function (el, i) { el.classList.toggle("current", i === k); }); }
  });
  grid.addEventListener("error", function (ev) {  // evidence not received (yet) or deleted
    if (ev.target.tagName === "IMG") {
      var s = document.createElement("span"); s.className = "noimg"; s.textContent = "no frame";
      ev.target.replaceWith(s);
    }
  }, true);

  document.addEventListener("keydown", function (ev) {
    if (window.pwTyping(ev)) return;
    var t = thumbs();
    switch (ev.key) {
      case "j": case "ArrowRight": ev.preventDefault(); mark(current + 1); break;
      case "k": case "ArrowLeft": ev.preventDefault(); mark(current - 1); break;
      case "ArrowDown": ev.preventDefault(); mark(current + columns()); break;
      case "ArrowUp": ev.preventDefault(); mark(current - columns()); break;
      case "x": if (t.length) { ev.preventDefault(); var c = t[current].querySelector("input"); c.checked = !c.checked; updateSel(); } break;
      case "o": case "Enter": if (t.length) { ev.preventDefault(); t[current].querySelector("a.open").click(); } break;
      case "R": if (!bulkBtn.disabled) { ev.preventDefault(); bulk.requestSubmit(bulkBtn); } break;
    }
  });

  document.addEventListener("pw:alert", function (ev) {
    var a = ev.detail;
    if (a.status !== "new" || grid.querySelector('.thumb[data-id="' + a.id + '"]')) return;
    if (grid.dataset.unit && grid.dataset.unit !== a.unit) return;
    var q = grid.dataset.unit ? "?unit=" + encodeURIComponent(grid.dataset.unit) : "";
    var d = document.createElement("div"); d.className = "thumb fresh"; d.dataset.id = a.id; d.dataset.alertId = a.alert_id;
    var link = document.createElement("a"); link.className = "open"; link.href = "/alerts/" + encodeURIComponent(a.alert_id) + q;
    var img = document.createElement("img"); img.src = "/alerts/" + encodeURIComponent(a.alert_id) + "/thumb.jpg"; img.alt = a.alert_id; img.width = 320; img.height = 240;
    link.appendChild(img); d.appendChild(link);
    var c = document.createElement("input"); c.type = "checkbox"; c.name = "alert_id"; c.value = a.alert_id; c.setAttribute("form", "bulk"); c.setAttribute("aria-label", "select " + a.alert_id);
    d.appendChild(c);
    var meta = document.createElement("div"); meta.className = "meta";
    [a.unit, a.score === null ? "—" : a.score.toFixed(2)].forEach(function (x) { var s = document.createElement("span"); s.textContent = x; meta.appendChild(s); });
    var tm = document.createElement("time"); tm.dateTime = a.time_iso; tm.title = a.time || a.time_iso; tm.textContent = a.time_local; meta.appendChild(tm);
    d.appendChild(meta);
    grid.appendChild(d);
    empty.hidden = true;
    if (thumbs().length === 1) mark(0);
  });
  document.addEventListener("pw:count", function (ev) {
    var el = document.getElementById("queue-count");
    if (el && !grid.dataset.unit) el.textContent = ev.detail + " unreviewed";
  });
  if (thumbs().length) mark(0);
})();
