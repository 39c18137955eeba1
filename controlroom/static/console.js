// Every logged-in page: one event stream (/events) that keeps the unreviewed count in the tab
// title and the header, optionally beeps / notifies on a new alert, and hands alerts to the
// page's own script as DOM events (pw:alert, pw:count, pw:open, pw:error). Also: the "u" key
// (undo the last decision while the undo bar is shown) and "?" (the keyboard help).
(function () {
  var body = document.body;
  var badge = document.getElementById("unreviewed");
  var baseTitle = document.title.replace(/^\(\d+\) /, "");
  function fire(name, detail) { document.dispatchEvent(new CustomEvent(name, {detail: detail})); }
  function setCount(n) {
    document.title = (n > 0 ? "(" + n + ") " : "") + baseTitle;
    if (badge) { badge.textContent = String(n); badge.dataset.n = String(n); }
    body.dataset.unreviewed = String(n);
    fire("pw:count", n);
  }
  window.pwSetCount = setCount;

  // --- sound and browser notification, opt-in per browser (localStorage)
  var notify = document.getElementById("notify");
  var KEY = "phonewatch.notify";
  if (notify) {
    notify.checked = localStorage.getItem(KEY) === "1";
    notify.addEventListener("change", function () {
      localStorage.setItem(KEY, notify.checked ? "1" : "0");
      if (notify.checked && "Notification" in window && Notification.permission === "default") {
        Notification.requestPermission();
      }
    });
  }
  var audio = null;
  function beep() {
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      var o = audio.createOscillator(), g = audio.createGain();
      o.frequency.value = 880; g.gain.value = 0.15;
      o.connect(g); g.connect(audio.destination);
      o.start(); o.stop(audio.currentTime + 0.18);
    } catch (e) { /* no audio: the title count still changes */ }
  }
  function announce(a) {
    if (!notify || !notify.checked) return;
    beep();
    if ("Notification" in window && Notification.permission === "granted") {
      var n = new Notification("New alert from " + a.unit, {body: a.alert_id + " · score " + (a.score === null ? "—" : a.score.toFixed(2)), tag: a.alert_id});
      n.onclick = function () { window.focus(); window.location.assign("/alerts/" + encodeURIComponent(a.alert_id)); };
    }
  }

  // --- the event stream
  if (body.dataset.events !== undefined) {
    var es = new EventSource("/events?" + body.dataset.events);
    es.onopen = function () { fire("pw:open"); };
    es.onerror = function () { fire("pw:error"); };
    es.addEventListener("logout", function () {
      es.close();
      window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
    });
    es.addEventListener("count", function (ev) { setCount(parseInt(ev.data, 10)); });
    es.addEventListener("alert", function (ev) {
      var a = JSON.parse(ev.data);
      if (a.status === "new") announce(a);
      fire("pw:alert", a);
    });
  }

  // --- the undo bar goes when the server would no longer accept the undo
  var undoBar = document.getElementById("undo-bar");
  if (undoBar) {
    window.setTimeout(function () { undoBar.remove(); }, Math.max(0, parseFloat(undoBar.dataset.left)) * 1000);
  }

  // --- keys shared by every page
  window.pwTyping = function (ev) {
    var t = ev.target;
    return ev.ctrlKey || ev.metaKey || ev.altKey || (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName)));
  };
  document.addEventListener("keydown", function (ev) {
    if (window.pwTyping(ev)) return;
    if (ev.key === "u") {
      var undo = document.getElementById("undo");
      if (undo) { ev.preventDefault(); undo.click(); }
    }
  });

  // --- the alert list's filters persist in this browser (localStorage) and in the address
  var filters = document.getElementById("filters");
  if (filters && window.location.pathname === "/") {
    var FKEY = "phonewatch.filters";
    if (window.location.search) {
      // a filter the server refused is not kept (the next visit would show the error again)
      if (!document.getElementById("filter-error")) localStorage.setItem(FKEY, window.location.search.slice(1));
    } else if (localStorage.getItem(FKEY)) {
      var saved = localStorage.getItem(FKEY);
      if (saved && saved.replace(/(^|&)[a-z]+=(?=&|$)/g, "") !== "") window.location.replace("/?" + saved);
    }
  }
})();
