// The fleet page: one card per host, filled from /api/hosts, then kept live by Socket.IO "host" events.
// Every string from a host is untrusted: it only ever goes into the page as textContent.
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var hosts = {};   // name -> the latest snapshot
  var charts = {};  // name -> [uPlot]

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function ago(seconds) {
    if (seconds === null || seconds === undefined) return "-";
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + "s";
    if (seconds < 3600) return Math.floor(seconds / 60) + "m" + ("0" + seconds % 60).slice(-2) + "s";
    return Math.floor(seconds / 3600) + "h" + ("0" + Math.floor(seconds % 3600 / 60)).slice(-2) + "m";
  }

  function post(path, then, body) {  // an action: the session's CSRF token, its one-line answer shown
    var headers = {"X-CSRF-Token": csrf};
    if (body) headers["Content-Type"] = "application/json";
    var box = document.getElementById("result");
    fetch("/api/" + path, {
      method: "POST", headers: headers, credentials: "same-origin", body: body ? JSON.stringify(body) : undefined
    }).then(function (r) { return r.json(); }).then(function (doc) {
      box.hidden = false;
      box.textContent = doc.line || doc.error || JSON.stringify(doc);
      if (then) then(doc);
    }).catch(function () {
      box.hidden = false;
      box.textContent = "no answer from the fleet: is invoke fleet still running?";
    });
  }

  // A URL path of names, each encoded on its own: a name can neither add segments ("/") nor climb
  // them (".", ".."; a browser resolves those before sending), so a click on a host's card reaches
  // that host's route, whatever the host named its services.
  function path(names) {
    return names.map(function (name) {
      name = String(name);
      if (name === "" || name === "." || name === "..") throw new Error("not a name: " + JSON.stringify(name));
      return encodeURIComponent(name);
    }).join("/");
  }

  function act(host, action, service) {
    var url;
    try { url = path(["hosts", host, action, service]); } catch (err) {
      var box = document.getElementById("result");
      box.hidden = false;
      box.textContent = "refused: " + err.message;
      return;
    }
    if (!window.confirm(action + " " + service + " on " + host + "?")) return;
    post(url);
  }

  function failover(host, data) {  // invoke failover --to host [--no-data]: stopped where it runs, then started here
    if (!window.confirm("Move the bot to " + host + "? It is stopped where it runs first, " +
                        (data ? "its data carried along, " : "its data NOT carried, ") + "then started on " +
                        host + " and watched for 5 s; if it does not stay up, it goes back.")) return;
    var box = document.getElementById("result");
    box.hidden = false;
    box.textContent = "moving the bot to " + host + "…";
    post("failover", null, {to: host, data: data});
  }

  function backupNow(host) {  // invoke backup --host host
    if (!window.confirm("Take a snapshot of the bot's data on " + host + " now, and copy it here?")) return;
    var box = document.getElementById("result");
    box.hidden = false;
    box.textContent = "backing up " + host + "…";
    var url;
    try { url = path(["hosts", host, "backup"]); } catch (err) { box.textContent = "refused: " + err.message; return; }
    post(url);
  }

  function backupLine(status) {  // "last backup 12 min ago · replica of pi: 4 min old", from the host's status
    var b = status && status.backups;
    if (!b || typeof b !== "object" || !b.data) return null;
    var now = status.now || Date.now() / 1000, parts = [];
    if (b.warning) parts.push("backup WARNING: " + b.warning);
    else if (b.last_ok && typeof b.last_ok.at === "number") parts.push("last backup " + ago(now - b.last_ok.at) + " ago");
    else parts.push("no backup yet");
    var replicas = b.replicas && typeof b.replicas === "object" ? b.replicas : {};
    Object.keys(replicas).slice(0, 8).forEach(function (of) {
      var r = replicas[of];
      if (r && typeof r.taken_at === "number") parts.push("replica of " + of + ": " + ago(now - r.taken_at) + " old");
    });
    return parts.join(" · ");
  }

  function tunnel(host) {
    post(path(["hosts", host, "tunnel"]), function (doc) {
      if (doc.url) window.open(doc.url, "_blank", "noopener");
    });
  }

  function services(doc) {  // a row of figures per service, then its detail and buttons across the card
    var table = el("table", null, "services");
    var head = el("tr");
    ["service", "state", "pid", "up", "restarts", "exit"].forEach(function (h) { head.appendChild(el("th", h)); });
    table.appendChild(head);
    var status = doc.status || {};
    var now = status.now || Date.now() / 1000;
    var svcs = status.services || {};
    Object.keys(svcs).forEach(function (name) {
      var svc = svcs[name];
      var row = el("tr");
      row.dataset.service = name;
      row.appendChild(el("td", name));
      row.appendChild(el("td", svc.state, "state-" + svc.state));
      row.appendChild(el("td", svc.pid || "-"));
      row.appendChild(el("td", svc.started_at && svc.state === "running" ? ago(now - svc.started_at) : "-"));
      row.appendChild(el("td", svc.restarts || 0));
      row.appendChild(el("td", svc.last_exit === null || svc.last_exit === undefined ? "-" : svc.last_exit));
      table.appendChild(row);
      var under = el("tr", null, "under");
      under.dataset.actions = name;
      var cell = el("td"), box = el("div");
      cell.colSpan = 6;
      cell.appendChild(box);
      var detail = [svc.bot_id, svc.status, svc.reason, name === "bot" ? doc.epoch_text : null]
        .filter(function (x) { return x; }).join(" · ");
      box.appendChild(el("span", detail, "detail muted"));
      var buttons = el("span", null, "buttons");
      ["restart", "stop", "start"].forEach(function (action) {
        var b = el("button", action);
        b.addEventListener("click", function () { act(doc.host, action, name); });
        buttons.appendChild(b);
      });
      box.appendChild(buttons);
      under.appendChild(cell);
      table.appendChild(under);
    });
    return table;
  }

  function facts(doc) {
    var parts = [doc.platform, doc.address];
    if (doc.rtt !== null && doc.rtt !== undefined) parts.push("rtt " + Math.round(doc.rtt * 1000) + " ms");
    var s = doc.sample;
    if (s) {
      parts.push("load " + (s.load / 100).toFixed(2));
      if (s.mem_total) parts.push("mem " + Math.round(100 * s.mem_used / s.mem_total) + "%");
      if (typeof s.battery === "number" && s.battery >= 0) parts.push("battery " + s.battery + "%");
    }
    return parts.filter(function (x) { return x; }).join(" · ");
  }

  function caption(history, kind) {  // "CPU %, 24 h: bot 4.2 now, 9.8 at most"
    var key = kind === "cpu" ? "_cpu" : "_rss", scale = kind === "cpu" ? 10 : 1024;
    var parts = SulfurCharts.SERVICES.map(function (svc) {
      var values = history[svc + key] || [];
      if (!values.length) return null;
      var top = 0;  // a loop: Math.max.apply fails on very long arrays
      for (var i = 0; i < values.length; i++) if (values[i] > top) top = values[i];
      top /= scale;
      var now = (values[values.length - 1] || 0) / scale;
      return svc + " " + now.toFixed(1) + " (max " + top.toFixed(1) + ")";
    }).filter(function (x) { return x; });
    return (kind === "cpu" ? "CPU %" : "RSS MB") + ", 24 h: " + parts.join(" · ");
  }

  function sparklines(card, name, history) {  // CPU and RSS of the last 24 h; a click: full size
    (charts[name] || []).forEach(function (c) { c.destroy(); });
    charts[name] = [];
    if (!history || !history.t || history.t.length < 2) return;
    var box = el("div", null, "sparks");
    box.title = "24 h: CPU % and RSS of each service, restarts dashed; click for full size";
    card.appendChild(box);
    var width = Math.max(200, card.clientWidth - 32);
    ["cpu", "rss"].forEach(function (kind) {
      box.appendChild(el("p", caption(history, kind), "caption muted"));
      var one = el("div", null, "chart");
      box.appendChild(one);
      var made = SulfurCharts.draw(one, history, kind, width, 50, false);
      if (made) charts[name].push(made);
    });
    box.appendChild(el("p", SulfurCharts.restartText(history), "facts muted"));
    box.addEventListener("click", function () { detail(name); });
  }

  var shown = null, detailCharts = [];  // the host in the full-size view
  function detail(name) {
    var dialog = document.getElementById("detail");
    shown = name;
    document.getElementById("detail-title").textContent = name + ": the last 24 h";
    if (!dialog.open) dialog.showModal();
    redrawDetail();
  }
  function redrawDetail() {
    var dialog = document.getElementById("detail");
    if (!shown || !dialog.open) return;
    detailCharts.forEach(function (c) { c.destroy(); });
    var doc = hosts[shown] || {};
    var width = Math.max(300, Math.min(1100, window.innerWidth - 96));
    detailCharts = SulfurCharts.drawAll(document.getElementById("detail-charts"), doc.history || {}, width);
  }
  document.getElementById("detail-close").addEventListener("click", function () {
    document.getElementById("detail").close();
  });
  document.getElementById("detail").addEventListener("close", function () { shown = null; });

  function draw(doc) {
    var card = document.querySelector('section.card[data-host="' + CSS.escape(doc.host) + '"]');
    if (!card) return;
    hosts[doc.host] = doc;
    card.dataset.updated = String((Number(card.dataset.updated) || 0) + 1);  // how many times it was drawn
    card.classList.toggle("down", !doc.reachable);
    card.textContent = "";
    var title = el("h2");
    title.appendChild(el("span", doc.host));
    title.appendChild(el("span", doc.reachable ? "reachable" : "unreachable since " +
      new Date((doc.since || 0) * 1000).toLocaleTimeString(), doc.reachable ? "state-running" : "state-failed"));
    card.appendChild(title);
    card.appendChild(el("p", facts(doc), "facts muted"));
    [doc.error, doc.status_error].forEach(function (why) { if (why) card.appendChild(el("p", why, "facts")); });
    if (doc.status) {
      card.appendChild(services(doc));
      var open = el("button", "open dashboard", "tunnel");
      open.addEventListener("click", function () { tunnel(doc.host); });
      card.appendChild(open);
      var bot = (doc.status.services || {}).bot;
      var line = backupLine(doc.status);
      if (line) {
        card.appendChild(el("p", line, "facts backups"));
        var save = el("button", "back up now", "backup");
        save.addEventListener("click", function () { backupNow(doc.host); });
        card.appendChild(save);
      }
      if (bot && ["standby", "stopped", "failed"].indexOf(bot.state) >= 0) {  // configured here, not running
        var move = el("button", "move the bot here", "failover");
        var carry = el("input");
        carry.type = "checkbox";
        carry.checked = true;
        carry.className = "carry";
        var label = el("label", null, "carry");
        label.appendChild(carry);
        label.appendChild(document.createTextNode(" carry its data"));
        move.addEventListener("click", function () { failover(doc.host, carry.checked); });
        card.appendChild(move);
        card.appendChild(label);
      }
    }
    sparklines(card, doc.host, doc.history);
    if (doc.host === shown) redrawDetail();
  }

  var DAY = 86400, MOST = 10000;
  function grow(history, sample) {  // one point more on every chart, then only the last 24 h kept
    if (typeof sample.t !== "number") return;
    Object.keys(history).forEach(function (k) { history[k].push(sample[k] === undefined ? null : sample[k]); });
    var t = history.t || [], cut = 0, newest = t[t.length - 1];
    while (cut < t.length && (t[cut] < newest - DAY || t.length - cut > MOST)) cut++;
    if (cut) Object.keys(history).forEach(function (k) { history[k].splice(0, cut); });
  }

  function safely(doc) {  // one host's odd data spoils its own card, never the others'
    try { draw(doc); } catch (err) {
      if (window.console) console.error("card " + doc.host + ": " + err);
    }
  }

  function banner(lines) {
    var box = document.getElementById("banner");
    box.hidden = !lines || !lines.length;
    box.textContent = (lines || []).map(function (l) { return "WARNING: " + l; }).join("\n");
  }

  function load() {  // every host with its 24 h, at the start; a host that (re)connects later sends its own
    fetch("/api/hosts?history=1", {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(function (doc) {
      (doc.hosts || []).forEach(safely);
      banner(doc.conflicts);
    });
  }
  load();

  var socket = io({transports: ["websocket", "polling"]});
  var log = document.getElementById("log"), following = null, picks = 0;
  function follow(again) {  // each pick numbered: a late line of an earlier pick, even of this log, is not shown
    log.textContent = "";
    if (!again) following = {host: document.getElementById("log-host").value,
                             service: document.getElementById("log-service").value};
    following.n = ++picks;
    socket.emit("follow", following);
  }
  document.getElementById("log-follow").addEventListener("click", function () { follow(false); });
  socket.on("log", function (msg) {
    if (!following || msg.n !== following.n) return;
    (msg.lines || []).forEach(function (line) { log.appendChild(document.createTextNode(String(line) + "\n")); });
    while (log.childNodes.length > 500) log.removeChild(log.firstChild);
    log.scrollTop = log.scrollHeight;
  });
  socket.on("connect", function () {  // a reconnect ended the follow on the server: ask for it again
    document.getElementById("connection").textContent = "live";
    if (following) follow(true);
  });
  socket.on("disconnect", function () { document.getElementById("connection").textContent = "reconnecting…"; });
  socket.on("host", function (msg) {
    var doc = msg.host, old = hosts[doc.host];
    if (msg.kind !== "history") {  // a backlog comes with its history; other events keep the one here
      if (old && old.history && old.history.t && msg.kind === "sample" && doc.sample) grow(old.history, doc.sample);
      doc.history = old ? old.history : null;
    }
    safely(doc);
    banner(msg.conflicts);
  });
})();
