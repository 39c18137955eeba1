// The alert page: keys for a fast review, the second step before a confirm, click-to-zoom on
// the evidence frame, the ROI box and the tracked vehicle's box when the alert carries them.
// Everything also works without this script (the server asks for the second step itself).
(function () {
  var review = document.getElementById("review");
  var step = document.getElementById("confirm-step");
  var confirmForm = document.getElementById("confirm-form");
  var note = review ? review.querySelector("textarea[name=note]") : null;
  var img = document.getElementById("evidence");
  var frame = document.getElementById("frame");

  function stepOpen() { return step && !step.hidden; }
  function openStep() {
    if (!step) return;
    step.hidden = false;
    document.getElementById("confirm-yes").focus();
  }
  function closeStep() { if (step) step.hidden = true; }
  function submitConfirm() {
    confirmForm.querySelector("input[name=note]").value = note ? note.value : "";
    confirmForm.requestSubmit();
  }
  if (review) {
    document.getElementById("confirm").addEventListener("click", function (ev) { ev.preventDefault(); openStep(); });
    confirmForm.addEventListener("submit", function () {
      confirmForm.querySelector("input[name=note]").value = note ? note.value : "";
    });
    document.getElementById("confirm-cancel").addEventListener("click", function (ev) { ev.preventDefault(); closeStep(); });
  }
  function toggleZoom() {
    if (!img) return;
    img.classList.toggle("zoomed");
    frame.classList.toggle("zoomed");
    placeBox();
  }
  if (img) img.addEventListener("click", toggleZoom);

  // the ROI box and the tracked vehicle's box, in frame pixels, scaled to the frame as shown
  var boxes = {};
  function place(id, cls, spec, label) {
    var b = spec.split(",").map(parseFloat);
    var s = img.clientWidth / img.naturalWidth;
    var el = boxes[id];
    if (!el) {
      el = boxes[id] = document.createElement("div"); el.className = cls; el.id = id;
      if (label) { var t = document.createElement("span"); t.className = "box-label"; t.textContent = label; el.appendChild(t); }
      frame.appendChild(el);
    }
    el.style.left = (img.offsetLeft + b[0] * s) + "px"; el.style.top = (img.offsetTop + b[1] * s) + "px";
    el.style.width = (b[2] * s) + "px"; el.style.height = (b[3] * s) + "px";
  }
  function placeBox() {
    if (!frame || !img.naturalWidth) return;
    if (frame.dataset.vehicleBox) place("vehicle-box", "vehicle-box", frame.dataset.vehicleBox, frame.dataset.vehicleLabel);
    if (frame.dataset.box) place("roi-box", "roi-box", frame.dataset.box, null);
  }
  if (img && frame && (frame.dataset.box || frame.dataset.vehicleBox)) {
    if (img.complete) placeBox(); else img.addEventListener("load", placeBox);
    window.addEventListener("resize", placeBox);
  }

  function go(id) { var a = document.getElementById(id); if (a) window.location.assign(a.href); }
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape") {
      if (stepOpen()) { ev.preventDefault(); closeStep(); return; }
      if (document.activeElement === note) { note.blur(); return; }
    }
    if (window.pwTyping(ev)) return;
    switch (ev.key) {
      case "j": ev.preventDefault(); go("next"); break;
      case "k": ev.preventDefault(); go("prev"); break;
      case "z": ev.preventDefault(); toggleZoom(); break;
      case "n": if (note) { ev.preventDefault(); note.focus(); } break;
      case "r": if (review && !stepOpen()) { ev.preventDefault(); document.getElementById("reject").click(); } break;
      case "c": if (review) { ev.preventDefault(); if (stepOpen()) submitConfirm(); else openStep(); } break;
      case "Enter": if (stepOpen() && document.activeElement !== document.getElementById("confirm-cancel")) { ev.preventDefault(); submitConfirm(); } break;
    }
  });
})();
