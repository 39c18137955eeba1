// Live alert list: new alerts from the page's event stream (console.js), same filters as the page.
(function () {
  var live = document.getElementById("live");
  var body = document.querySelector("#alerts tbody");
  if (!live || !body) return;
  document.addEventListener("pw:open", function () { live.textContent = "Live: new alerts appear here as they arrive."; });
  document.addEventListener("pw:error", function () { live.textContent = "Live: reconnecting…"; });
  function time(text, iso, title) {
    var t = document.createElement("time"); t.dateTime = iso; t.title = title || iso; t.textContent = text; return t;
  }
  function cell(tr, label, content) {
    var td = document.createElement("td"); td.dataset.label = label;
    if (typeof content === "string") td.textContent = content; else td.appendChild(content);
    tr.appendChild(td); return td;
  }
  document.addEventListener("pw:alert", function (ev) {
    var a = ev.detail;
    if (document.querySelector('#alerts tr[data-id="' + a.id + '"]')) return;
    var empty = body.querySelector("tr.empty"); if (empty) empty.remove();
    var tr = document.createElement("tr");
    tr.dataset.id = a.id; tr.className = "status-" + a.status + " fresh";
    var link = document.createElement("a"); link.href = "/alerts/" + encodeURIComponent(a.alert_id); link.textContent = a.alert_id;
    cell(tr, "Alert", link);
    cell(tr, "Unit", a.unit);
    if (document.getElementById("alerts").dataset.cameras) {
      var cam = cell(tr, "Camera", a.camera || "—"); cam.className = "camera";
      if (a.vehicle) { var v = document.createElement("span"); v.className = "muted"; v.textContent = " " + a.vehicle; cam.appendChild(v); }
    }
    cell(tr, "Time", a.time_s === null ? "—" : time(a.time_local, a.time_iso, a.time));
    cell(tr, "Score", a.score === null ? "—" : a.score.toFixed(2));
    cell(tr, "Position", a.lat === null ? "no fix" : a.lat.toFixed(5) + ", " + a.lon.toFixed(5));
    var badge = document.createElement("span"); badge.className = "badge status-" + a.status; badge.textContent = a.status;
    cell(tr, "Status", badge);
    cell(tr, "Received", time(a.received, a.received_iso));
    body.insertBefore(tr, body.firstChild);
  });
})();
