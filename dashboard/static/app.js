// The live bot log over Socket.IO, and a periodic refresh of the status cards.
(function () {
  "use strict";
  const MAX_LINES = 1000;
  const logEl = document.getElementById("log");
  const stateEl = document.getElementById("log-state");

  function append(lines, replace) {
    const atBottom = logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - 4;
    if (replace) logEl.textContent = "";
    for (const line of lines) {
      const div = document.createElement("div");
      div.className = "line";
      div.textContent = line;
      logEl.appendChild(div);
    }
    while (logEl.childElementCount > MAX_LINES) logEl.removeChild(logEl.firstChild);
    if (atBottom) logEl.scrollTop = logEl.scrollHeight;
  }

  const socket = io({ transports: ["websocket", "polling"] });
  socket.on("connect", () => { stateEl.textContent = "live"; });
  socket.on("disconnect", () => { stateEl.textContent = "reconnecting…"; });
  socket.on("connect_error", () => { stateEl.textContent = "not connected"; });
  socket.on("log_init", (msg) => append(msg.lines, true));
  socket.on("log_lines", (msg) => append(msg.lines, false));

  async function refresh() {
    try {
      const response = await fetch("/api/status", { credentials: "same-origin" });
      if (!response.ok) return;
      const status = await response.json();
      const h = status.host;
      document.getElementById("host-load").textContent = h.load ? h.load.join(" ") : "unknown";
    } catch (err) { /* the next refresh will tell */ }
  }
  setInterval(refresh, 5000);

  // the same 24 h charts as the fleet page, from this host's ring; a new sample comes every 10 s
  const historyEl = document.getElementById("history-charts");
  let charts = [];
  async function history() {
    try {
      const response = await fetch("/api/history", { credentials: "same-origin" });
      if (!response.ok || !window.SulfurCharts) return;
      const doc = await response.json();
      charts.forEach((chart) => chart.destroy());
      const width = Math.max(240, historyEl.clientWidth);
      charts = SulfurCharts.drawAll(historyEl, doc.samples, width, width >= 900 ? 2 : 1);
    } catch (err) { /* the next turn will tell */ }
  }
  if (historyEl) { history(); setInterval(history, 30000); }

  // restart buttons: the supervisor does the work; the page only asks, with the session's CSRF token
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  for (const button of document.querySelectorAll("button.restart")) {
    button.addEventListener("click", async () => {
      const result = document.getElementById("restart-result");
      result.textContent = "restarting " + button.dataset.service + "…";
      try {
        const response = await fetch("/api/restart/" + button.dataset.service,
                                     { method: "POST", credentials: "same-origin",
                                       headers: { "X-CSRF-Token": csrf } });
        const answer = await response.json();
        result.textContent = response.ok ? button.dataset.service + " restarted (pid " + answer.pid + ")"
                                         : "failed: " + answer.error;
      } catch (err) {
        result.textContent = "the page lost its dashboard: reload in a moment";
      }
    });
  }
})();
