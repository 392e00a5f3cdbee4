// A host's last 24 h from its supervisor's ring (run/history.bin, one sample per 10 s): CPU % and RSS
// of each service, load, memory and battery, with restarts drawn as marks on the time axis.
// One file for both pages that show it, the host's own dashboard and the fleet page (uPlot, vendored).
(function () {
  "use strict";
  // the history's services, named once in the host package (remote/host/common/names.py) and given
  // to the page in base.html's meta
  var SERVICES = (document.querySelector('meta[name="sampled-services"]') || {content: ""})
    .content.split(" ").filter(function (x) { return x; });
  var COLORS = {supervisor: "#9ca3af", dashboard: "#3b82f6", bot: "#f59e0b", load: "#10b981",
                memory: "#8b5cf6", battery: "#ef4444"};
  var KINDS = {  // what a chart shows: its series, each a name and how to read it from the columns
    cpu: {title: "CPU % of each service", series: SERVICES.map(function (svc) {
      return {label: svc, key: svc + "_cpu", value: function (v) { return v / 10; }};
    })},
    rss: {title: "memory (RSS, MB) of each service", series: SERVICES.map(function (svc) {
      return {label: svc, key: svc + "_rss", value: function (v) { return Math.round(v / 102.4) / 10; }};
    })},
    load: {title: "load (1 min)", series: [{label: "load", key: "load", value: function (v) { return v / 100; }}]},
    memory: {title: "host memory in use and battery, %", series: [
      {label: "memory", key: "mem_used", value: function (v, h, i) {
        var total = (h.mem_total || [])[i];
        return total ? Math.round(1000 * v / total) / 10 : null;
      }},
      {label: "battery", key: "battery", optional: true, value: function (v) { return v >= 0 ? v : null; }}
    ]}
  };

  function restarts(h) {  // [[time, service]]: where a service's restart counter grew
    var marks = [];
    if (!h || !h.t) return marks;
    SERVICES.forEach(function (svc) {
      var count = h[svc + "_restarts"] || [];
      for (var i = 1; i < count.length; i++) if (count[i] > count[i - 1]) marks.push([h.t[i], svc]);
    });
    return marks.sort(function (a, b) { return a[0] - b[0]; });
  }

  function marks(list) {  // a uPlot plugin: a dashed line in the service's colour at each restart
    return {hooks: {draw: [function (u) {
      var ctx = u.ctx, top = u.bbox.top, bottom = u.bbox.top + u.bbox.height;
      ctx.save();
      ctx.lineWidth = Math.max(1, window.devicePixelRatio || 1);
      ctx.setLineDash([4, 3]);
      list.forEach(function (mark) {
        var x = u.valToPos(mark[0], "x", true);
        if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
        ctx.strokeStyle = COLORS[mark[1]];
        ctx.beginPath();
        ctx.moveTo(x, top);
        ctx.lineTo(x, bottom);
        ctx.stroke();
      });
      ctx.restore();
    }]}};
  }

  function shown(h, kind) {  // a series marked optional (the battery) only where the host has it
    return KINDS[kind].series.filter(function (s) {
      return !s.optional || (h[s.key] || []).some(function (v) { return v >= 0; });
    });
  }

  function columns(h, kind) {
    var data = [h.t];
    shown(h, kind).forEach(function (s) {
      data.push((h[s.key] || []).map(function (v, i) { return s.value(v, h, i); }));
    });
    return data;
  }

  // A chart of ``kind`` into ``box``; ``full``: axes and legend, or a sparkline without them.
  function draw(box, h, kind, width, height, full) {
    if (!window.uPlot || !h || !h.t || h.t.length < 2) return null;
    var axis = {stroke: "#8b929c", grid: {stroke: "rgba(139,146,156,.2)"}, ticks: {stroke: "rgba(139,146,156,.3)"}};
    var series = [{}].concat(shown(h, kind).map(function (s) {
      return {label: s.label, stroke: COLORS[s.label], width: full ? 1.5 : 1, spanGaps: false};
    }));
    var options = {
      width: width, height: height, series: series, plugins: [marks(restarts(h))],
      legend: {show: !!full}, cursor: {show: !!full},
      axes: full ? [axis, Object.assign({size: 45}, axis)] : [{show: false}, Object.assign({size: 34}, axis)]
    };
    box.dataset.kind = kind;
    box.dataset.restarts = String(restarts(h).length);
    return new window.uPlot(options, columns(h, kind), box);
  }

  function restartText(h) {  // "restarts in 24 h: dashboard 06:51, bot 07:02" (or "none")
    var list = restarts(h);
    if (!list.length) return "restarts in 24 h: none";
    return "restarts in 24 h: " + list.map(function (m) {
      return m[1] + " " + new Date(m[0] * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
    }).join(", ");
  }

  // Every chart of a host into ``root``: the restarts as a line of text, then a titled chart per kind,
  // in ``across`` columns of the ``width`` given.
  function drawAll(root, h, width, across) {
    across = across || 1;
    root.textContent = "";
    var made = [];
    var note = document.createElement("p");
    note.className = "restart-marks";
    note.textContent = restartText(h);
    root.appendChild(note);
    var grid = document.createElement("div");
    grid.className = "chart-grid";
    grid.style.display = "grid";
    grid.style.gridTemplateColumns = "repeat(" + across + ", minmax(0, 1fr))";
    grid.style.columnGap = "16px";
    root.appendChild(grid);
    var each = Math.floor((width - 16 * (across - 1)) / across);
    ["cpu", "rss", "load", "memory"].forEach(function (kind) {
      var cell = document.createElement("div");
      var title = document.createElement("h3");
      title.textContent = KINDS[kind].title;
      var box = document.createElement("div");
      box.className = "chart full";
      cell.appendChild(title);
      cell.appendChild(box);
      grid.appendChild(cell);
      var chart = draw(box, h, kind, each, 140, true);
      if (chart) made.push(chart);
      else box.textContent = "no samples yet: the supervisor writes one every 10 s";
    });
    return made;
  }

  window.SulfurCharts = {draw: draw, drawAll: drawAll, restarts: restarts, restartText: restartText,
                         SERVICES: SERVICES};
})();
