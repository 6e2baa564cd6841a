// contactpulse wallboard: renders the snapshots the worker pushes over server-sent events.
// No framework, no CDN: this file, the CSS and the HTML are everything the TV loads.
(function () {
  "use strict";

  var DASH = "\u2014";
  var STALE_AFTER_MS = 5000; // no snapshot for this long: the stream is dead even if the socket is not
  var METRICS = [
    ["waiting", "Waiting"],
    ["oldest_wait_seconds", "Oldest wait"],
    ["asa_seconds", "ASA"],
    ["abandon_ratio", "Abandoned"],
    ["agents_available", "Agents available"],
    ["frt_backlog", "Tickets waiting"], // tickets still awaiting their first human reply
  ];

  var state = { snapshot: null, receivedAt: 0, lastMessageAt: 0, source: null, connection: "connecting" };
  window.wallboard = state; // for people debugging a TV (and for the browser test)

  var $ = function (id) { return document.getElementById(id); };
  var board = $("board");
  var tiles = {}; // queue -> {el, values: {metric: element}}

  // --- formatting (tests/integration/test_wallboard_browser.py mirrors these rules) ---------------
  function count(n) { return n === null || n === undefined ? DASH : String(n); }
  function duration(seconds, round) {
    if (seconds === null || seconds === undefined) return DASH;
    var s = round ? Math.round(seconds) : Math.floor(seconds);
    if (s < 60) return s + " s";
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    var mm = h ? String(m).padStart(2, "0") : String(m);
    return (h ? h + ":" : "") + mm + ":" + String(r).padStart(2, "0");
  }
  function percent1(ratio) { return ratio === null || ratio === undefined ? DASH : (ratio * 100).toFixed(1) + "%"; }
  function format(metric, q) {
    switch (metric) {
      case "service_level": return q.service_level_percent === null ? DASH : q.service_level_percent + "%";
      case "oldest_wait_seconds": return q.waiting ? duration(q.oldest_wait_seconds, false) : DASH;
      case "asa_seconds": return duration(q.asa_seconds, true);
      case "abandon_ratio": return percent1(q.abandon_ratio);
      default: return count(q[metric]);
    }
  }
  state.format = format;

  // --- layout -------------------------------------------------------------------------------------
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function makeTile(queue) {
    var t = el("section", "tile");
    t.dataset.queue = queue;
    t.appendChild(el("h2", "queue", queue));
    var sl = el("div", "sl");
    var value = el("div", "sl-value", DASH);
    value.dataset.metric = "service_level";
    var target = el("div", "sl-target", "");
    sl.appendChild(value);
    sl.appendChild(target);
    t.appendChild(sl);
    var stats = el("dl", "stats");
    var values = { service_level: value };
    METRICS.forEach(function (m) {
      var box = el("div", "stat");
      box.dataset.box = m[0];
      box.appendChild(el("dt", "", m[1]));
      var dd = el("dd", "", DASH);
      dd.dataset.metric = m[0];
      box.appendChild(dd);
      stats.appendChild(box);
      values[m[0]] = dd;
    });
    t.appendChild(stats);
    var foot = el("div", "foot", "");
    t.appendChild(foot);
    return { el: t, values: values, target: target, foot: foot };
  }
  function layout(n) {
    var rows = Math.max(1, Math.ceil(n / 4));
    var cols = Math.max(1, Math.ceil(n / rows));
    board.style.setProperty("--cols", cols);
    board.style.setProperty("--rows", rows);
  }

  // --- rendering ----------------------------------------------------------------------------------
  function setText(node, text) { if (node.textContent !== text) node.textContent = text; }
  function siteTime(epoch, tz) {
    try {
      return new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: tz })
        .format(new Date(epoch * 1000));
    } catch (e) { return new Date(epoch * 1000).toLocaleTimeString(); }
  }
  function windowLabel(s) {
    if (s.window === "interval") return "Interval since " + siteTime(s.window_start, s.timezone);
    if (s.window === "today") return "Today since " + siteTime(s.window_start, s.timezone);
    return "Last " + Math.round(s.trailing_seconds / 60) + " min";
  }
  function render(s) {
    var names = s.queues.map(function (q) { return q.queue; });
    Object.keys(tiles).forEach(function (name) {
      if (names.indexOf(name) < 0) { tiles[name].el.remove(); delete tiles[name]; }
    });
    $("empty") && ($("empty").hidden = names.length > 0);
    s.queues.forEach(function (q, i) {
      var t = tiles[q.queue] || (tiles[q.queue] = makeTile(q.queue));
      if (board.children[i + 1] !== t.el) board.insertBefore(t.el, board.children[i + 1] || null);
      t.el.dataset.status = q.sl_status;
      t.data = q;
      Object.keys(t.values).forEach(function (metric) {
        var node = t.values[metric];
        setText(node, format(metric, q));
        node.dataset.value = JSON.stringify(q[metric] === undefined ? null : q[metric]);
      });
      setText(t.target, q.sl_target === null
        ? "within " + q.sl_threshold_seconds + " s"
        : "target " + Math.round(q.sl_target * 100) + "% in " + q.sl_threshold_seconds + " s");
      setText(t.foot, "offered " + q.offered + " \u00b7 answered " + q.answered + " \u00b7 abandoned " + q.abandoned);
    });
    layout(names.length);
    setText($("window"), windowLabel(s));
    setText($("scope"), s.scope);
    var warning = $("warning");
    warning.hidden = !s.warning;
    setText(warning, s.warning || "");
    document.body.dataset.generatedAt = String(s.generated_at);
  }

  // The oldest wait keeps moving between snapshots (and while the worker restarts): age at the
  // snapshot + time since it arrived, measured on this screen's monotonic clock (immune to clock skew).
  function tick() {
    var elapsed = state.snapshot ? (performance.now() - state.receivedAt) / 1000 : 0;
    Object.keys(tiles).forEach(function (name) {
      var t = tiles[name], q = t.data;
      if (!q) return;
      var node = t.values.oldest_wait_seconds;
      var age = q.oldest_wait_seconds + elapsed;
      if (q.waiting) {
        setText(node, duration(age, false));
        node.dataset.ticked = String(age);
      } else {
        setText(node, DASH);
        node.dataset.ticked = "0";
      }
      node.parentNode.dataset.alert = q.waiting && age >= state.snapshot.oldest_wait_alert_seconds ? "on" : "off";
    });
    var s = state.snapshot;
    var now = new Date();
    setText($("clock"), s ? siteTime(now.getTime() / 1000, s.timezone) : now.toTimeString().slice(0, 5));
    if ((state.connection === "live" || state.connection === "recovering") &&
        performance.now() - state.lastMessageAt > STALE_AFTER_MS) {
      setConnection("reconnecting");
      reconnect();
    }
  }

  function setConnection(name, text) {
    state.connection = name;
    var conn = $("conn");
    conn.dataset.state = name;
    document.body.dataset.connection = name;
    setText($("conn-text"), text || name);
  }

  // --- the live stream ----------------------------------------------------------------------------
  var source = null;
  var retryTimer = null;
  function connect() {
    clearTimeout(retryTimer);
    if (source) source.close();
    source = new EventSource("/wallboard/events" + location.search);
    state.source = source;
    source.onmessage = function (e) {
      var s = JSON.parse(e.data);
      state.lastMessageAt = performance.now();
      if (s.version && s.version !== document.body.dataset.version) {
        // The worker was upgraded: load the new page once (a loop is impossible: the new page has the new version).
        location.reload();
        return;
      }
      if (s.recovering && state.snapshot) {
        // A restarted worker is still restoring its tables: keep the last complete numbers on screen.
        setConnection("recovering", "worker recovering");
        return;
      }
      state.snapshot = s;
      state.receivedAt = performance.now();
      render(s);
      tick();
      setConnection("live", s.source === "prometheus" ? "live \u00b7 cluster" : "live");
    };
    source.onerror = function () {
      setConnection("reconnecting", "reconnecting\u2026");
      // EventSource retries by itself after network errors; after an HTTP error it gives up: start over.
      if (source.readyState === EventSource.CLOSED) reconnect();
    };
  }
  function reconnect() {
    clearTimeout(retryTimer);
    if (source) { source.close(); source = null; }
    retryTimer = setTimeout(connect, 2000);
  }

  connect();
  setInterval(tick, 250); // 4x a second so whole seconds change on time
})();
