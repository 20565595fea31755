// queuebench dashboard: one EventSource (the server batches qb:events), the live part
// of each page fetched again when its tasks change, and two SVG charts. No build step.
(function () {
  "use strict";
  const COLORS = {PENDING: "#888", STARTED: "#1f77b4", RETRY: "#ff7f0e", SUCCESS: "#2ca02c",
    FAILURE: "#d62728", REVOKED: "#9467bd", EXPIRED: "#8c564b",
    p50: "#2ca02c", p95: "#ff7f0e", p99: "#d62728"};
  let loading = false, again = false;

  function liveUrl() {
    const url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    return url;
  }

  async function refresh() {  // one fetch at a time; changes meanwhile fetch once more
    if (loading) { again = true; return; }
    loading = true;
    try {
      const answer = await fetch(liveUrl(), {headers: {"Accept": "text/html"}});
      if (answer.ok) document.getElementById("live").innerHTML = await answer.text();
    } finally {
      loading = false;
      if (again) { again = false; refresh(); }
    }
  }

  function concerns(ids) {  // does this batch of changed task ids touch the page?
    const live = document.getElementById("live");
    const mode = live.dataset.refresh;
    if (mode === "tick") return true;
    if (mode === "any") return ids.length > 0;
    return ids.some((id) => live.querySelector(`[data-id="${CSS.escape(id)}"]`));
  }

  function line(svg, values, max, color, width) {
    const n = values.length, pts = [];
    values.forEach((v, i) => {
      if (v === null || v === undefined) return;
      pts.push(`${(i / Math.max(1, n - 1)) * 600},${175 - (v / max) * 165}`);
    });
    if (!pts.length) return;
    if (pts.length === 1) pts.push(pts[0].replace(/^[^,]*/, (x) => String(Number(x) - 6)));
    const el = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    el.setAttribute("points", pts.join(" "));
    el.setAttribute("fill", "none");
    el.setAttribute("stroke", color);
    el.setAttribute("stroke-width", width || 2);
    el.setAttribute("vector-effect", "non-scaling-stroke");
    svg.appendChild(el);
  }

  function chart(id, series) {
    const svg = document.getElementById(id), legend = document.getElementById(id + "-legend");
    if (!svg) return;
    const all = Object.values(series).flat().filter((v) => v !== null);
    const max = Math.max(1e-9, ...all) * 1.1;
    svg.replaceChildren();
    legend.replaceChildren();
    for (const [name, values] of Object.entries(series)) {
      line(svg, values, max, COLORS[name] || "#333");
      const last = values.filter((v) => v !== null).slice(-1)[0];
      const item = document.createElement("span");
      item.style.color = COLORS[name] || "#333";
      item.textContent = `${name} ${last === undefined ? "–" : last} `;
      legend.appendChild(item);
    }
    const top = document.createElement("span");
    top.className = "muted";
    top.textContent = ` (top: ${max.toPrecision(3)})`;
    legend.appendChild(top);
  }

  function charts(data) {
    if (!data || !data.t) return;
    chart("rates", data.rates);
    chart("latency", data.latency);
  }

  async function act(button) {  // cancel and retry call the API itself
    const out = document.getElementById("action-result");
    let answer;
    if (button.dataset.cancel) {
      answer = await fetch(button.dataset.cancel, {method: "DELETE"});
    } else {
      answer = await fetch(button.dataset.retry, {method: "POST", body: button.dataset.body,
        headers: {"Content-Type": "application/json"}});
    }
    const body = await answer.json();
    if (!answer.ok) { out.textContent = `${answer.status}: ${JSON.stringify(body.detail)}`; return; }
    if (button.dataset.retry) { window.location.href = `../tasks/${body.id}`; return; }
    out.textContent = `${answer.status}: ${body.state}`;
    refresh();
  }

  document.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-cancel], button[data-retry]");
    if (button) { e.preventDefault(); act(button); }
  });

  document.addEventListener("DOMContentLoaded", () => {
    const initial = document.getElementById("chart-data");
    if (initial) charts(JSON.parse(initial.textContent));
    const status = document.getElementById("live-status");
    const source = new EventSource(document.querySelector("main").dataset.events);
    source.onopen = () => {  // subscribed now: catch up on what changed since the render
      status.textContent = "live";
      status.className = "ok";
      refresh();
    };
    source.onerror = () => { status.textContent = "reconnecting…"; status.className = "muted"; };
    source.onmessage = (e) => {
      const update = JSON.parse(e.data);
      charts(update.chart);
      if (concerns(update.ids)) refresh();
    };
  });
})();
