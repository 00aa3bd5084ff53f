// The page of `anyres-fast serve`: an OpenSeadragon viewer over the server's Deep Zoom tiles and the
// controls that choose the pyramid (seed, truncation, style-fusion centres). window.anyres exposes the
// viewer and the current settings (the browser test drives them).
"use strict";
window.anyres = { viewer: null, info: null, settings: null };

function settingsFromControls(info) {
  const seed = parseInt(document.getElementById("seed").value || "0", 10);
  let s = "seed=" + seed;
  if (info.model === "anyres") {
    s += ",psi=" + parseFloat(document.getElementById("psi").value || "1");
  } else {
    const fuse = document.getElementById("fuse").value.trim();
    const centres = document.getElementById("centres").value.trim();
    if (fuse && centres) {
      s += ",fuse=" + fuse.split(",").map(v => v.trim()).join(":");
      s += ",centres=" + centres.split(";").map(p => p.split(",").map(v => v.trim()).join(":")).join(";");
    }
  }
  return s;
}

function tileSource(info, settings) {
  return { Image: { xmlns: "http://schemas.microsoft.com/deepzoom/2008",
                    Url: "/tiles/" + encodeURIComponent(settings) + "/",
                    Format: info.format, Overlap: "0", TileSize: String(info.tile),
                    Size: { Width: String(info.width), Height: String(info.height) } } };
}

function applySettings() {
  const info = window.anyres.info;
  const settings = settingsFromControls(info);
  window.anyres.settings = settings;
  window.anyres.viewer.open(tileSource(info, settings));
  document.getElementById("status").textContent = settings;
}

fetch("/api/info").then(r => r.json()).then(info => {
  window.anyres.info = info;
  for (const el of document.querySelectorAll("." + info.model + "-only")) el.style.display = "inline";
  const el = document.getElementById("viewer");
  // ?bare: no zoom buttons over the image (screenshots).
  const bare = new URLSearchParams(window.location.search).has("bare");
  const opts = { id: "viewer", prefixUrl: "/viewer/images/", drawer: "canvas", showNavigator: false,
                 showNavigationControl: !bare,
                 minLevel: info.min_level, immediateRender: false, maxZoomPixelRatio: 8,
                 imageSmoothingEnabled: false };
  if (info.model === "infinity") {
    // Native scale is viewport zoom width/el.clientWidth; the pyramid stops `zoom_out` levels below it.
    const native = info.width / el.clientWidth;
    opts.defaultZoomLevel = native;
    opts.minZoomLevel = native / Math.pow(2, info.zoom_out);
    opts.visibilityRatio = 1;
  }
  window.anyres.viewer = OpenSeadragon(opts);
  if (info.model === "infinity") {
    window.anyres.viewer.addHandler("open", () => {
      const vp = window.anyres.viewer.viewport;
      vp.panTo(vp.imageToViewportCoordinates(info.width / 2, info.height / 2), true);
    });
  }
  applySettings();
});
