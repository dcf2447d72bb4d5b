/* The campaign page's plots: the series the server embedded (#series, JSON),
 * drawn with uPlot (static/vendor).  One chart per [data-plot] element. */
(function () {
  "use strict";
  var source = document.getElementById("series");
  if (!source || typeof uPlot === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  var palette = ["#2454a6", "#b3261e", "#2e7d32", "#d19a00", "#7b3fb5", "#00838f"];

  function columns(name) {
    if (name === "by_kind") {
      var kinds = Object.keys(data.by_kind);
      return { labels: kinds, values: kinds.map(function (k) { return data.by_kind[k]; }) };
    }
    return { labels: [name.replace(/_/g, " ")], values: [data[name]] };
  }

  function draw(el) {
    var c = columns(el.dataset.plot);
    if (c.labels.length === 0) {
      el.textContent = "nothing to plot";
      el.classList.add("muted");
      return;
    }
    var opts = {
      width: Math.max(320, el.clientWidth),
      height: 240,
      scales: { x: { time: false } },
      axes: [{ label: "seconds" }, { size: 60 }],
      series: [{ label: "t" }].concat(c.labels.map(function (label, i) {
        return { label: label, stroke: palette[i % palette.length], width: 1.5, spanGaps: false };
      }))
    };
    var chart = new uPlot(opts, [data.t].concat(c.values), el);
    el.dataset.drawn = "1";
    window.addEventListener("resize", function () {
      chart.setSize({ width: Math.max(320, el.clientWidth), height: 240 });
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll("[data-plot]"), draw);
}());
