// Building the page: every string becomes a text node, never HTML, so names and eval lines a
// tenant chose cannot run as script in anyone's console.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

export function table(columns, rows, cells) {
  // columns: header texts; cells(row) -> one value or Node per column
  return el("div", { class: "table-wrap" }, el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col" }, c)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, cells(r).map((v) => el("td", {}, v)))))));
}

export function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 4000);
}

export function pct(value) {
  return value === null || value === undefined ? "" : `${Math.round(value * 100)}%`;
}

export function when(epochSeconds) {
  return epochSeconds ? new Date(epochSeconds * 1000).toLocaleString() : "";
}

export function repeating(fn, ms) {
  // Runs fn now and every ms until stop(); a failure goes to the toast, the next run still comes.
  let timer = null;
  const run = () => Promise.resolve().then(fn).catch((err) => toast(err.message));
  return {
    start() { this.stop(); run(); timer = setInterval(run, ms); },
    stop() { if (timer) { clearInterval(timer); timer = null; } },
  };
}
