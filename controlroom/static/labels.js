// The labelling queue without page reloads: each label (buttons, keys, bulk) is a POST to
// /labels/api/label with the session's CSRF token, and the page updates in place; "u" undoes
// the last one (/labels/api/undo) while its bar is shown. Without this script every button is a
// plain form that comes back to the page.
(function () {
  // The range form's ROI list offers the chosen unit's ROIs only.
  var rangeUnit = document.getElementById("range-unit");
  var rangeRoi = document.getElementById("range-roi");
  function filterRois() {
    Array.prototype.forEach.call(rangeRoi.options, function (o) {
      var other = !!o.dataset.unit && o.dataset.unit !== rangeUnit.value;
      o.hidden = o.disabled = other;
      if (other && o.selected) rangeRoi.value = "";
    });
  }
  if (rangeUnit && rangeRoi) { rangeUnit.addEventListener("change", filterRois); filterRois(); }

  var root = document.getElementById("label-queue");
  var bulk = document.getElementById("bulk");
  if (!root || !bulk) return;  // nothing queued
  var csrf = bulk.querySelector("input[name=csrf]").value;
  var bar = document.getElementById("label-undo-bar");
  var barText = document.getElementById("label-undo-text");
  var undoBtn = document.getElementById("label-undo");
  var status = document.getElementById("label-status");
  var help = document.getElementById("label-help");
  var count = document.getElementById("label-count");
  var nSel = document.getElementById("n-selected");
  var all = document.getElementById("select-all");
  var empty = document.getElementById("queue-empty");
  var undoS = parseFloat(root.dataset.undoS) || 10;
  var current = 0, last = null, lastTimer = null, pending = 0, chain = Promise.resolve();

  function crops() { return Array.prototype.slice.call(root.querySelectorAll("figure.crop:not([hidden])")); }
  function mark(i, focus) {
    var c = crops();
    root.querySelectorAll("figure.crop.current").forEach(function (el) { el.classList.remove("current"); });
    if (!c.length) { current = 0; return; }
    current = Math.max(0, Math.min(i, c.length - 1));
    c[current].classList.add("current");
    if (focus !== false) { c[current].focus({preventScroll: true}); c[current].scrollIntoView({block: "nearest"}); }
  }
  function say(text, kind) {
    status.textContent = text;
    status.className = "flash flash-" + (kind || "info");
    status.hidden = !text;
  }
  function selected() {
    return Array.prototype.slice.call(root.querySelectorAll("figure.crop:not([hidden]) input[type=checkbox]:checked"));
  }
  function updateSel() {
    var n = selected().length;
    nSel.textContent = String(n);
    bulk.querySelectorAll("button.bulk").forEach(function (b) { b.disabled = n === 0; });
    root.querySelectorAll("figure.crop").forEach(function (el) {
      el.classList.toggle("selected", el.querySelector("input[type=checkbox]").checked);
    });
  }
  function setCount(delta) {
    var n = Math.max(0, parseInt(count.dataset.n, 10) + delta);
    count.dataset.n = String(n);
    count.textContent = n + " to label";
    empty.hidden = crops().length > 0;
  }
  function sessionCount(el, delta) {
    var box = el.closest(".crops"), head = box && box.previousElementSibling;
    var n = head && head.querySelector(".n");
    if (!n) return;
    var left = Math.max(0, parseInt(n.textContent, 10) + delta);
    n.textContent = String(left);
    head.hidden = left === 0;  // a session labelled to the end goes; undo brings it back
  }
  function post(url, fields) {
    var body = new URLSearchParams();
    body.append("csrf", csrf);
    Object.keys(fields).forEach(function (k) {
      [].concat(fields[k]).forEach(function (v) { body.append(k, String(v)); });
    });
    return fetch(url, {method: "POST", body: body, credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (j) {
          if (!r.ok) {
            var msg = typeof j.detail === "string" ? j.detail : "the server said " + r.status;
            if (r.status === 401) msg = "Your session has ended, so nothing was changed. Log in again (reload the page).";
            throw new Error(msg);
          }
          return j;
        });
      });
  }
  function hide(id) {
    var el = document.getElementById("crop-" + id);
    if (!el || el.hidden) return;
    el.hidden = true;
    el.classList.remove("current", "selected");
    el.querySelector("input[type=checkbox]").checked = false;
    sessionCount(el, -1);
    setCount(-1);
  }
  function unhide(id) {
    var el = document.getElementById("crop-" + id);
    if (!el || !el.hidden) return null;
    el.hidden = false;
    sessionCount(el, 1);
    setCount(1);
    return el;
  }
  function showUndo(batch, text) {
    last = batch;
    barText.textContent = text;
    bar.hidden = false;
    window.clearTimeout(lastTimer);
    lastTimer = window.setTimeout(function () { bar.hidden = true; last = null; }, undoS * 1000);
  }
  // Labels are shown at once (the crop goes, the next one is current) and sent in order, one
  // request after the other, so keys pressed quickly are never lost; a refused label brings
  // its crops back with the reason.
  function label(ids, value) {
    if (!ids.length) return;
    ids.forEach(hide);
    updateSel();
    mark(current);
    pending += 1;
    chain = chain.then(function () {
      return post("/labels/api/label", {id: ids, label: value}).then(function (j) {
        var words = value.replace("_", " ");
        showUndo(j.batch, "Labelled " + j.labelled.length + " crop" + (j.labelled.length === 1 ? "" : "s") + " as " + words + ".");
        say(j.not_queued.length ? j.not_queued.length + " of them had been labelled already (by someone else, or deleted); left as they were." : "", "info");
      }).catch(function (e) {
        var back = ids.map(unhide).filter(Boolean);
        if (back.length) mark(crops().indexOf(back[0]));
        say("Not labelled: " + e.message, "error");
      }).then(function () { pending -= 1; });
    });
  }
  function undo() {
    pending += 1;
    chain = chain.then(function () {
      var batch = last;
      if (!batch) { pending -= 1; return; }
      return post("/labels/api/undo", {batch: batch}).then(function (j) {
        var back = j.undone.map(unhide).filter(Boolean);
        say("Undone: " + j.undone.length + " crop" + (j.undone.length === 1 ? "" : "s") + " back in the queue.", "ok");
        if (back.length) mark(crops().indexOf(back[0]));
      }).catch(function (e) {
        say("Not undone: " + e.message, "error");
      }).then(function () {
        bar.hidden = true; last = null; pending -= 1;
      });
    });
  }
  // Keys are ignored while typing (a text field, a select, Ctrl/Alt/Meta) but not on a crop's
  // checkbox or a button: after ticking a crop, "p" still labels.
  function typing(ev) {
    var t = ev.target;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return true;
    if (!t || !t.tagName) return false;
    if (t.tagName === "INPUT") return !/^(checkbox|radio|button|submit)$/.test(t.type);
    return t.isContentEditable || /^(TEXTAREA|SELECT)$/.test(t.tagName);
  }
  function currentId() {
    var c = crops();
    return c.length ? [parseInt(c[current].dataset.id, 10)] : [];
  }
  function selectedIds() { return selected().map(function (c) { return parseInt(c.value, 10); }); }

  root.addEventListener("submit", function (ev) {
    var f = ev.target, btn = ev.submitter;
    if (!btn || !btn.value) return;
    if (f === bulk) { ev.preventDefault(); label(selectedIds(), btn.value); return; }
    var fig = f.closest("figure.crop");
    if (fig) {
      ev.preventDefault();
      mark(crops().indexOf(fig), false);
      label([parseInt(fig.dataset.id, 10)], btn.value);
    }
  });
  root.addEventListener("change", function (ev) {
    if (ev.target === all) {
      crops().forEach(function (el) { el.querySelector("input[type=checkbox]").checked = all.checked; });
    }
    updateSel();
  });
  root.addEventListener("click", function (ev) {
    var fig = ev.target.closest("figure.crop");
    if (fig && ev.target.tagName === "IMG") mark(crops().indexOf(fig), false);
  });
  undoBtn.addEventListener("click", undo);
  root.addEventListener("error", function (ev) {  // deleted by retention meanwhile
    if (ev.target.tagName === "IMG") ev.target.alt = "crop no longer stored";
  }, true);

  // "u" here is this page's undo; the capture phase runs before console.js's review undo.
  window.addEventListener("keydown", function (ev) {
    if (typing(ev)) return;
    if (ev.key === "u" && (last || pending)) { ev.preventDefault(); ev.stopImmediatePropagation(); undo(); }
  }, true);
  document.addEventListener("keydown", function (ev) {
    if (typing(ev) || (ev.target.closest && ev.target.closest("#range-form"))) return;
    var c = crops();
    switch (ev.key) {
      case "j": case "ArrowRight": ev.preventDefault(); mark(current + 1); break;
      case "k": case "ArrowLeft": ev.preventDefault(); mark(current - 1); break;
      case "p": ev.preventDefault(); label(currentId(), "phone"); break;
      case "n": ev.preventDefault(); label(currentId(), "no_phone"); break;
      case "s": ev.preventDefault(); label(currentId(), "skip"); break;
      case "P": ev.preventDefault(); label(selectedIds(), "phone"); break;
      case "N": ev.preventDefault(); label(selectedIds(), "no_phone"); break;
      case "S": ev.preventDefault(); label(selectedIds(), "skip"); break;
      case "x":
        if (c.length) { ev.preventDefault(); var box = c[current].querySelector("input[type=checkbox]"); box.checked = !box.checked; updateSel(); }
        break;
      case "?": ev.preventDefault(); help.hidden = !help.hidden; break;
      case "Escape": help.hidden = true; break;
    }
  });
  if (crops().length) mark(0, false);
})();
