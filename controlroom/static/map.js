// Evidence position on a Leaflet map; the coordinate readout in the page works without it.
(function () {
  if (typeof L === "undefined") return;  // the coordinate readout above still stands
  var el = document.getElementById("map");
  var c = document.getElementById("coords");
  var pos = [parseFloat(c.dataset.lat), parseFloat(c.dataset.lon)];
  L.Icon.Default.imagePath = "/static/leaflet/images/";
  var map = L.map(el).setView(pos, 17);
  if (el.dataset.tiles) {
    L.tileLayer(el.dataset.tiles, {maxZoom: 19, attribution: el.dataset.attribution}).addTo(map);
  }
  L.marker(pos).addTo(map).bindPopup(c.textContent);
})();
