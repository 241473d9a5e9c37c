// The jobs dashboard: live status and logs, and stop/restart/delete with the page's XSRF token.
// Every value from the service is inserted with textContent, never as HTML.
(function () {
  "use strict";
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const api = meta("jobs-api");
  const xsrf = meta("xsrf-token");

  function call(method, path, user) {
    const query = user ? `?user=${encodeURIComponent(user)}` : "";
    return fetch(`${api}${path}${query}`, {
      method,
      credentials: "same-origin",
      headers: { "X-XSRFToken": xsrf },
    });
  }

  function setStatus(element, status) {
    element.textContent = status;
    element.className = `jhub-ext-status status-${status}`;
  }

  const filter = document.getElementById("user-filter");
  if (filter) filter.addEventListener("change", () => filter.form.submit());

  // The list: refresh each row's status.
  const table = document.querySelector("table.jhub-ext-jobs");
  if (table) {
    const owner = table.dataset.owner;
    const refresh = async () => {
      const response = await call("GET", "jobs", owner && owner !== "" ? owner : null);
      if (!response.ok) return;
      const body = await response.json();
      for (const job of body.jobs) {
        const row = [...table.querySelectorAll("tbody tr")].find(
          (r) => r.dataset.name === job.name && r.dataset.user === job.user
        );
        if (row) setStatus(row.querySelector(".jhub-ext-status"), job.status);
      }
    };
    setInterval(refresh, 3000);
  }

  // One job: stream its log, keep its status fresh, act on it.
  const page = document.querySelector(".jhub-ext-job");
  if (page) {
    const name = page.dataset.name;
    const log = document.getElementById("log");
    const status = document.getElementById("status");
    const error = document.getElementById("error");
    const owner = new URLSearchParams(location.search).get("user");

    const showError = (text) => {
      error.textContent = text;
      error.classList.remove("d-none");
    };

    const stream = async () => {
      const query = new URLSearchParams({ follow: "1", tail: "2000" });
      if (owner) query.set("user", owner);
      const response = await fetch(`${api}jobs/${encodeURIComponent(name)}/logs?${query}`, {
        credentials: "same-origin",
        headers: { "X-XSRFToken": xsrf }, // cookie-authenticated fetches need it, GETs included
      });
      if (!response.ok || !response.body) return;
      log.textContent = "";
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        log.append(document.createTextNode(decoder.decode(value, { stream: true })));
        log.scrollTop = log.scrollHeight;
      }
    };

    const refresh = async () => {
      const response = await call("GET", `jobs/${encodeURIComponent(name)}`, owner);
      if (response.ok) setStatus(status, (await response.json()).status);
    };

    for (const button of page.querySelectorAll("button[data-action]")) {
      button.addEventListener("click", async () => {
        const action = button.dataset.action;
        if (action === "delete" && !confirm(`Delete ${name} and its log?`)) return;
        const response =
          action === "delete"
            ? await call("DELETE", `jobs/${encodeURIComponent(name)}`, owner)
            : await call("POST", `jobs/${encodeURIComponent(name)}/${action}`, owner);
        if (!response.ok) {
          const body = await response.json().catch(() => ({ error: response.statusText }));
          showError(body.error);
          return;
        }
        if (action === "delete") {
          location.href = meta("jobs-api").replace(/api\/$/, "") + (owner ? `?user=${encodeURIComponent(owner)}` : "");
          return;
        }
        setStatus(status, (await response.json()).status);
        if (action === "restart") stream();
      });
    }
    stream();
    setInterval(refresh, 2000);
  }

  // Notification settings: read and saved through the API; a refusal names the field at fault.
  const form = document.getElementById("notify-settings");
  if (form) {
    const error = document.getElementById("error");
    const saved = document.getElementById("saved");
    const field = (name) => form.elements.namedItem(name);
    const checks = () => [...form.querySelectorAll("input[name=events]")];

    const show = (notify) => {
      field("email").value = notify.email || "";
      field("webhook").value = notify.webhook || "";
      for (const box of checks()) box.checked = (notify.events || []).includes(box.value);
    };
    const load = async () => {
      const response = await call("GET", "settings");
      if (response.ok) show((await response.json()).notify);
    };

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.classList.add("d-none");
      saved.classList.add("d-none");
      for (const input of form.querySelectorAll(".is-invalid")) input.classList.remove("is-invalid");
      const notify = {
        email: field("email").value.trim() || null,
        events: checks().filter((box) => box.checked).map((box) => box.value),
      };
      if (form.dataset.webhooks === "yes") notify.webhook = field("webhook").value.trim() || null;
      const response = await fetch(`${api}settings`, {
        method: "PUT",
        credentials: "same-origin",
        headers: { "X-XSRFToken": xsrf, "Content-Type": "application/json" },
        body: JSON.stringify({ notify }),
      });
      const body = await response.json().catch(() => ({ error: response.statusText }));
      if (!response.ok) {
        error.textContent = body.error;
        error.classList.remove("d-none");
        const name = (body.field || "").split(".")[1];
        if (name && field(name) && field(name).classList) field(name).classList.add("is-invalid");
        return;
      }
      show(body.notify);
      saved.classList.remove("d-none");
    });
    load();
  }

  // Usage: cost per day, stacked by profile (or by user, for admins), drawn as SVG bars.
  const chart = document.getElementById("usage-chart");
  if (chart) {
    const scope = document.getElementById("usage-scope");
    const stack = document.getElementById("usage-stack");
    const error = document.getElementById("error");
    const svg = "http://www.w3.org/2000/svg";
    const colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

    const query = (format) => {
      const params = new URLSearchParams({ by: `day,${stack.value}` });
      if (scope.value === "everyone") params.set("user", "*");
      else if (scope.value.startsWith("group:")) params.set("group", scope.value.slice(6));
      if (format) params.set("format", format);
      return `${api}usage?${params}`;
    };
    const node = (name, attributes, text) => {
      const element = document.createElementNS(svg, name);
      for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
      if (text !== undefined) element.textContent = text;
      return element;
    };

    const draw = (report) => {
      const key = stack.value;
      const days = [...new Set(report.rows.map((row) => row.day))];
      const keys = [...new Set(report.rows.map((row) => row[key] ?? "-"))];
      const perDay = days.map((day) => report.rows.filter((row) => row.day === day));
      const highest = Math.max(1e-9, ...perDay.map((rows) => rows.reduce((sum, row) => sum + row.cost, 0)));
      const width = Math.max(320, days.length * 36 + 60), height = 220, bottom = 30, left = 50;
      const picture = node("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "jhub-ext-usage-chart" });
      picture.append(node("text", { x: 4, y: 12, "font-size": 11 }, `${highest.toFixed(2)} ${report.currency}`));
      days.forEach((day, index) => {
        let top = height - bottom;
        const x = left + index * 36;
        for (const row of perDay[index]) {
          const bar = ((height - bottom - 20) * row.cost) / highest;
          top -= bar;
          const colour = colours[keys.indexOf(row[key] ?? "-") % colours.length];
          const rect = node("rect", { x, y: top, width: 28, height: Math.max(bar, 0), fill: colour, "data-day": day, "data-key": row[key] ?? "-" });
          rect.append(node("title", {}, `${day} ${row[key] ?? "-"}: ${row.cost.toFixed(2)} ${report.currency}`));
          picture.append(rect);
        }
        picture.append(node("text", { x, y: height - 12, "font-size": 10 }, day.slice(5)));
      });
      const legend = document.createElement("ul");
      legend.className = "list-inline small jhub-ext-usage-legend";
      keys.forEach((name, index) => {
        const item = document.createElement("li");
        item.className = "list-inline-item";
        const swatch = document.createElement("span");
        swatch.style.cssText = `display:inline-block;width:10px;height:10px;margin-right:4px;background:${colours[index % colours.length]}`;
        item.append(swatch, document.createTextNode(name));
        legend.append(item);
      });
      chart.replaceChildren(days.length ? picture : document.createTextNode("Nothing has run yet this month."), legend);
      document.getElementById("usage-total").textContent = report.total.toFixed(2);
      document.getElementById("usage-key").textContent = key === "user" ? "User" : "Profile";
      const totals = new Map();
      for (const row of report.rows) {
        const name = row[key] ?? "-";
        const [hours, cost] = totals.get(name) || [0, 0];
        totals.set(name, [hours + row.hours, cost + row.cost]);
      }
      const body = document.querySelector("#usage-table tbody");
      body.replaceChildren(
        ...[...totals].map(([name, [hours, cost]]) => {
          const tr = document.createElement("tr");
          for (const text of [name, hours.toFixed(2), cost.toFixed(2)]) {
            const td = document.createElement("td");
            td.textContent = text;
            tr.append(td);
          }
          return tr;
        })
      );
    };

    const load = async () => {
      const response = await fetch(query(), { credentials: "same-origin", headers: { "X-XSRFToken": xsrf } });
      const body = await response.json().catch(() => ({ error: response.statusText }));
      if (!response.ok) {
        error.textContent = body.error;
        error.classList.remove("d-none");
        return;
      }
      error.classList.add("d-none");
      draw(body);
    };
    document.getElementById("usage-csv").addEventListener("click", async () => {
      const response = await fetch(query("csv"), { credentials: "same-origin", headers: { "X-XSRFToken": xsrf } });
      if (!response.ok) return;
      const link = document.createElement("a");
      link.href = URL.createObjectURL(await response.blob());
      link.download = "usage.csv";
      link.click();
    });
    scope.addEventListener("change", load);
    stack.addEventListener("change", load);
    load();
  }
})();
