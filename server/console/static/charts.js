// Small SVG charts (no library): a line chart for training loss, grouped bars for scores.

const NS = "http://www.w3.org/2000/svg";
const COLORS = ["#2f6fde", "#e07b00", "#1e7b34", "#b3261e", "#7b3fb3"];

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function legend(names) {
  const box = document.createElement("div");
  box.className = "legend";
  names.forEach((name, i) => {
    const item = document.createElement("span");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = COLORS[i % COLORS.length];
    item.append(swatch, document.createTextNode(name));
    box.append(item);
  });
  return box;
}

export function lineChart(series, { xLabel = "", yLabel = "", label = "chart" } = {}) {
  // series: [{name, points: [[x, y], ...]}]
  const W = 600, H = 240, L = 48, B = 30, T = 10, R = 10;
  const points = series.flatMap((s) => s.points);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": label });
  const wrap = document.createElement("div");
  wrap.append(root, legend(series.map((s) => s.name)));
  if (!points.length) { root.append(svg("text", { x: L, y: H / 2 }, "no data yet")); return wrap; }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  // the y range is the data's own (a loss curve near 10 would look flat on a scale from 0)
  const lo = Math.min(...ys), hi = Math.max(...ys), pad = (hi - lo) * 0.05 || Math.abs(hi) * 0.05 || 1;
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = lo - pad, y1 = hi + pad;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - B - T);
  root.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#99a" }),
    svg("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#99a" }),
    svg("text", { x: L - 4, y: sy(y1) + 4, "text-anchor": "end" }, y1.toPrecision(3)),
    svg("text", { x: L - 4, y: sy(y0), "text-anchor": "end" }, y0.toPrecision(3)),
    svg("text", { x: L, y: H - 8 }, x0), svg("text", { x: W - R, y: H - 8, "text-anchor": "end" }, x1),
    svg("text", { x: W / 2, y: H - 4, "text-anchor": "middle" }, xLabel),
    svg("text", { x: L + 6, y: T + 10 }, yLabel));
  series.forEach((s, i) => {
    const d = s.points.map((p, k) => `${k ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    root.append(svg("path", { d, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 2, "data-series": s.name }));
  });
  return wrap;
}

export function barChart(groups, names, { max = 1, label = "chart", format = (v) => v } = {}) {
  // groups: [{label, values: [number|null per name], mark: number|null (a tick, e.g. a bound)}]
  const rowH = 14 * names.length + 10, L = 150, W = 600, R = 50;
  const H = groups.length * rowH + 10;
  const root = svg("svg", { viewBox: `0 0 ${W} ${Math.max(H, 20)}`, class: "chart", role: "img", "aria-label": label });
  groups.forEach((g, gi) => {
    const top = gi * rowH + 5;
    root.append(svg("text", { x: 0, y: top + 12 }, g.label.length > 24 ? `${g.label.slice(0, 23)}…` : g.label));
    g.values.forEach((v, i) => {
      if (v === null || v === undefined) return;
      const w = Math.max(0, Math.min(1, v / max)) * (W - L - R);
      root.append(svg("rect", { x: L, y: top + i * 14, width: w.toFixed(1), height: 12, fill: COLORS[i % COLORS.length] }),
        svg("text", { x: L + w + 4, y: top + i * 14 + 10 }, format(v)));
    });
    if (g.mark !== null && g.mark !== undefined) {
      const x = L + Math.max(0, Math.min(1, g.mark / max)) * (W - L - R);
      root.append(svg("line", { x1: x, y1: top - 2, x2: x, y2: top + rowH - 8, stroke: "#000", "stroke-dasharray": "3,2" }));
    }
  });
  const wrap = document.createElement("div");
  wrap.append(root, legend(names));
  return wrap;
}
