// The Veil admin dashboard (issue 13 §4): fills the page from the live stream
// (/admin/api/stream, server-sent events), and sends the operator's actions to the admin
// API with the session's CSRF header. No inline script anywhere (the page's CSP forbids
// it); every word comes from the catalogs in the page's JSON data block.
"use strict";

(function () {
  const catalogs = JSON.parse(document.getElementById("veil-strings").textContent);
  const body = document.body;
  let lang = body.dataset.lang === "zh" ? "zh" : "en";
  const HISTORY = 120; // two minutes of one frame a second
  const rates = [];
  const p99s = [];
  let last = null; // the last frame, to redraw after a language switch
  let shown = null; // the message shown last (key, fields): said again on a switch

  function t(key, fields) {
    let text = (catalogs[lang] && catalogs[lang][key]) || catalogs.en[key] || key;
    if (fields) {
      for (const [name, value] of Object.entries(fields)) {
        text = text.split("{" + name + "}").join(String(value));
      }
    }
    return text;
  }

  function applyLanguage() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    body.dataset.lang = lang;
    for (const el of document.querySelectorAll("[data-i18n]")) {
      el.textContent = t(el.dataset.i18n);
    }
    for (const el of document.querySelectorAll("[data-i18n-placeholder]")) {
      el.placeholder = t(el.dataset.i18nPlaceholder);
      el.setAttribute("aria-label", el.placeholder);
    }
    const footer = document.getElementById("footer");
    if (footer) footer.textContent = t("footer", { version: body.dataset.version });
    const registration = document.getElementById("registration");
    if (registration) {
      const mode = body.dataset.registration;
      const name = catalogs.en["mode." + mode] ? t("mode." + mode) : mode;
      registration.textContent = t("registration", { mode: name });
    }
    if (shown) showMessage(shown.key, shown.fields, shown.isError);
    if (last) render(last);
  }

  function toggleLanguage() {
    lang = lang === "zh" ? "en" : "zh";
    document.cookie = "veil_admin_lang=" + lang + "; path=/admin; SameSite=Strict; max-age=31536000";
    applyLanguage();
  }

  const langButton = document.getElementById("lang");
  if (langButton) langButton.addEventListener("click", toggleLanguage);
  if (body.dataset.page !== "dashboard") return;

  const csrf = document.querySelector('meta[name="veil-csrf"]').content;
  const csrfHeader = body.dataset.csrfHeader;

  function number(value, digits) {
    if (value === null || value === undefined) return "–";
    return new Intl.NumberFormat(lang === "zh" ? "zh-CN" : "en", {
      maximumFractionDigits: digits === undefined ? 0 : digits,
    }).format(value);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
    seconds = Math.max(0, seconds);
    if (seconds < 120) return number(seconds) + " " + t("unit.s");
    if (seconds < 7200) return number(seconds / 60) + " " + t("unit.min");
    if (seconds < 172800) return number(seconds / 3600, 1) + " " + t("unit.h");
    return number(seconds / 86400, 1) + " " + t("unit.d");
  }

  function setText(id, text) {
    const el = document.getElementById(id);
    if (el && el.textContent !== text) el.textContent = text;
  }

  function showMessage(key, fields, isError) {
    shown = { key: key, fields: fields, isError: isError };
    const el = document.getElementById("message");
    el.textContent = t(key, fields);
    el.classList.toggle("error", Boolean(isError));
    el.hidden = false;
  }

  async function call(method, path, payload) {
    const headers = { Accept: "application/json" };
    headers[csrfHeader] = csrf;
    const init = { method: method, headers: headers, credentials: "same-origin" };
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    const response = await fetch(path, init);
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (response.status === 401) {
      window.location.reload(); // the session ended: back to the sign-in form
    }
    if (!response.ok) {
      const message = data && data.error ? data.error.message : response.statusText;
      throw new Error(message);
    }
    return data;
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function fillTable(id, items, makeRow) {
    const table = document.getElementById(id);
    const tbody = table.querySelector("tbody");
    const rows = [];
    for (const item of items || []) rows.push(makeRow(item));
    tbody.replaceChildren(...rows);
    table.classList.toggle("filled", rows.length > 0);
    document.getElementById(id + "-none").classList.toggle("hidden", rows.length > 0);
  }

  function blockLeft(block) {
    if (typeof block.left_s === "number") return block.left_s;
    if (typeof block.seconds_left === "number") return block.seconds_left;
    if (typeof block.until_ms === "number") return (block.until_ms - Date.now()) / 1000;
    if (typeof block.until === "number") {
      return block.until > 1e11 ? (block.until - Date.now()) / 1000 : block.until - Date.now() / 1000;
    }
    return null;
  }

  const lifting = new Set();

  async function lift(id, button) {
    button.disabled = true;
    lifting.add(id);
    try {
      await call("POST", "/admin/api/blocks/" + encodeURIComponent(id) + "/lift");
      showMessage("blocks.lifted", { id: id });
      const row = button.closest("tr");
      if (row) row.remove();
    } catch (e) {
      showMessage("error.failed", { message: e.message }, true);
      button.disabled = false;
      lifting.delete(id);
    }
  }

  function blockRow(block) {
    const row = document.createElement("tr");
    const id = String(block.id);
    row.dataset.id = id;
    cell(row, id.slice(0, 12), "id");
    cell(row, block.rule || "–");
    cell(row, block.key_hash || block.source_hash || "–", "hash");
    cell(row, duration(blockLeft(block)));
    cell(row, number(block.count));
    const td = cell(row, "");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "action danger lift";
    button.dataset.id = id;
    button.textContent = t("blocks.lift");
    button.disabled = lifting.has(id);
    button.addEventListener("click", () => lift(id, button));
    td.appendChild(button);
    return row;
  }

  function alertRow(alert) {
    const row = document.createElement("tr");
    cell(row, alert.rule || "–");
    cell(row, number(alert.count));
    cell(row, alert.source_hash || "–", "hash");
    cell(row, alert.blocked_s ? duration(alert.blocked_s) : "–");
    return row;
  }

  function draw(id, values, color) {
    const canvas = document.getElementById(id);
    if (!canvas) return;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 640;
    const height = canvas.clientHeight || 140;
    if (canvas.width !== Math.round(width * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const top = Math.max(1, ...values.map((v) => v || 0)) * 1.15;
    g.strokeStyle = "#dde1e7";
    g.lineWidth = 1;
    g.fillStyle = "#5f6b7a";
    g.font = "11px system-ui, sans-serif";
    for (let i = 0; i <= 2; i++) {
      const y = 8 + ((height - 16) * i) / 2;
      g.beginPath();
      g.moveTo(0, y);
      g.lineTo(width, y);
      g.stroke();
      g.fillText(number((top * (2 - i)) / 2, top < 10 ? 1 : 0), 4, y - 2 + (i === 0 ? 12 : 0));
    }
    if (values.length < 2) return;
    const step = width / (HISTORY - 1);
    const x0 = width - step * (values.length - 1);
    g.beginPath();
    values.forEach((v, i) => {
      const x = x0 + i * step;
      const y = height - 8 - ((height - 16) * (v || 0)) / top;
      if (i === 0) g.moveTo(x, y);
      else g.lineTo(x, y);
    });
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.stroke();
  }

  function kindName(kind) {
    const key = "kind." + kind;
    return catalogs.en[key] ? t(key) : kind;
  }

  function render(frame) {
    setText("rate", number(frame.requests_per_s, 1));
    setText("p50", number(frame.p50_ms, 1));
    setText("p99", number(frame.p99_ms, 1));
    setText("connections", number(frame.connections_total));
    const kinds = document.getElementById("connection-kinds");
    const items = Object.entries(frame.connections || {}).map(([kind, count]) => {
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.textContent = kindName(kind);
      const value = document.createElement("span");
      value.textContent = number(count);
      li.append(name, value);
      return li;
    });
    kinds.replaceChildren(...items);
    setText("alerts-total", number(frame.alerts_total));
    setText("stored", number(frame.messages ? frame.messages.stored : null));
    setText("delivered", number(frame.messages ? frame.messages.delivered : null));
    setText("uptime", duration(frame.uptime_s));
    const blocksValue = document.querySelector("#card-blocks .value");
    if (frame.blocks === null) {
      setText("blocks-total", "–");
      setText("blocks-none", t("blocks.unavailable"));
    } else {
      setText("blocks-total", number(frame.blocks_total));
      setText("blocks-none", t("blocks.none"));
    }
    blocksValue.classList.toggle("alarm", Boolean(frame.blocks_total));
    fillTable("blocks", (frame.blocks || []).filter((b) => !lifting.has(String(b.id))), blockRow);
    fillTable("alerts", frame.alerts, alertRow);
    draw("chart-rate", rates, "#2f6fdf");
    draw("chart-p99", p99s, "#c0392b");
  }

  function onFrame(event) {
    const frame = JSON.parse(event.data);
    last = frame;
    rates.push(frame.requests_per_s);
    p99s.push(frame.p99_ms);
    if (rates.length > HISTORY) rates.shift();
    if (p99s.length > HISTORY) p99s.shift();
    const badge = document.getElementById("live");
    badge.dataset.i18n = "live";
    badge.textContent = t("live");
    badge.classList.remove("off");
    render(frame);
  }

  function connect() {
    const source = new EventSource("/admin/api/stream");
    source.addEventListener("frame", onFrame);
    source.addEventListener("error", async () => {
      const badge = document.getElementById("live");
      badge.dataset.i18n = "offline";
      badge.textContent = t("offline");
      badge.classList.add("off");
      try {
        const response = await fetch("/admin/api/status", { credentials: "same-origin" });
        if (response.status === 401) {
          source.close();
          window.location.reload();
        }
      } catch (e) {
        // The server is away: EventSource retries by itself.
      }
    });
  }

  function ruleText(rule) {
    return typeof rule === "string" ? rule : rule.cidr || JSON.stringify(rule);
  }

  function showRules(rules) {
    const list = document.getElementById("rules");
    const items = (rules || []).map((rule) => {
      const cidr = ruleText(rule);
      const li = document.createElement("li");
      const text = document.createElement("span");
      text.textContent = cidr;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "action remove";
      button.dataset.i18n = "deny.remove";
      button.textContent = t("deny.remove");
      button.addEventListener("click", async () => {
        button.disabled = true;
        try {
          const data = await call("DELETE", "/admin/api/deny", { cidr: cidr });
          showMessage("deny.removed", { cidr: cidr });
          showRules(data.rules);
        } catch (e) {
          showMessage("error.failed", { message: e.message }, true);
          button.disabled = false;
        }
      });
      li.append(text, button);
      return li;
    });
    list.replaceChildren(...items);
    document.getElementById("rules-none").classList.toggle("hidden", items.length > 0);
  }

  async function loadRules() {
    try {
      const data = await call("GET", "/admin/api/deny");
      showRules(data.rules);
    } catch (e) {
      showRules([]);
    }
  }

  document.getElementById("deny-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("deny-cidr");
    const submit = document.getElementById("deny-submit");
    submit.disabled = true;
    try {
      const data = await call("POST", "/admin/api/deny", { cidr: input.value.trim() });
      showMessage("deny.done", { cidr: data.denied });
      input.value = "";
      showRules(data.rules);
    } catch (e) {
      showMessage("error.failed", { message: e.message }, true);
    } finally {
      submit.disabled = false;
    }
  });

  document.getElementById("logout").addEventListener("click", async () => {
    try {
      await call("POST", "/admin/logout");
    } finally {
      window.location.reload();
    }
  });

  applyLanguage();
  connect();
  loadRules();
})();
