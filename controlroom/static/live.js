// Live alert list: server-sent events from /events, same filters as the page.
(function () {
  var params = new URLSearchParams(window.location.search);
  params.set("after", document.getElementById("alerts").dataset.lastId);
  var live = document.getElementById("live");
  var body = document.querySelector("#alerts tbody");
  var es = new EventSource("/events?" + params.toString());
  es.onopen = function () { live.textContent = "Live: new alerts appear here as they arrive."; };
  es.onerror = function () { live.textContent = "Live: reconnecting…"; };
  // The session ended (logged out elsewhere, disabled, expired): stop and go to the log-in page.
  es.addEventListener("logout", function () {
    es.close();
    window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
  });
  function cell(tr, text) { var td = document.createElement("td"); td.textContent = text; tr.appendChild(td); return td; }
  es.addEventListener("alert", function (ev) {
    var a = JSON.parse(ev.data);
    if (document.querySelector('tr[data-id="' + a.id + '"]')) return;
    var tr = document.createElement("tr");
    tr.dataset.id = a.id; tr.className = "status-" + a.status + " fresh";
    var link = document.createElement("a"); link.href = "/alerts/" + encodeURIComponent(a.alert_id); link.textContent = a.alert_id;
    cell(tr, "").appendChild(link);
    cell(tr, a.unit); cell(tr, a.time);
    cell(tr, a.score === null ? "—" : a.score.toFixed(2));
    cell(tr, a.lat === null ? "no fix" : a.lat.toFixed(5) + ", " + a.lon.toFixed(5));
    cell(tr, a.status); cell(tr, a.received);
    body.insertBefore(tr, body.firstChild);
  });
})();
