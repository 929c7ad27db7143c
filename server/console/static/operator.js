// The operator's views: workers, base versions and their compatibility, migrations, tenants and keys.

import { api } from "./api.js";
import { barChart } from "./charts.js";
import { clear, el, pct, repeating, table, toast } from "./dom.js";

const ACTIVE = ["queued", "running"];

function errorBox() {
  return el("p", { class: "error", role: "alert" });
}

function workersView(root) {
  const box = el("div", {}, "Loading…");
  async function refresh() {
    try {
      const rows = await api("/admin/workers");
      clear(box).append(table(["worker", "base", "state", "in flight", "restarts", "resident adapters"], rows, (w) => [
        w.name, w.base_version, el("span", { class: w.state === "ready" ? "status-ready" : "status-rejected" }, w.state),
        w.in_flight, w.restarts, `${w.resident_adapters.length}`]));
    } catch (err) { clear(box).append(el("p", { class: "error" }, err.message)); }
  }
  root.append(el("section", {}, el("h2", {}, "Workers"), box));
  refresh();
  const timer = setInterval(refresh, 3000);
  return () => clearInterval(timer);
}

function basesView(root) {
  const box = el("div", {}, "Loading…");
  const chart = el("section", { id: "compatibility", hidden: true });
  async function compare(name, from, to) {
    try {
      const report = await api(`/admin/bases/${encodeURIComponent(name)}/compatibility?from_version=${from}&to_version=${to}`);
      const groups = Object.entries(report.groups).map(([g, v]) => ({ label: g, values: [v.relative_change, v.max_module_change] }));
      const layers = report.per_layer.map((l) => ({ label: `layer ${l.layer}`, values: [l.attention, l.ffn] }));
      const max = Math.max(1e-9, ...groups.flatMap((g) => g.values), ...layers.flatMap((l) => l.values));
      const fmt = (v) => `${(v * 100).toFixed(2)}%`;
      clear(chart).append(el("h2", {}, `Weight change ${report.from} → ${report.to}`),
        barChart(groups, ["relative change", "largest module"], { max, format: fmt, label: "weight change by group" }),
        el("h3", {}, "Per layer"), barChart(layers, ["attention", "FFN"], { max, format: fmt, label: "weight change by layer" }));
      chart.hidden = false;
    } catch (err) { toast(err.message); }
  }
  (async () => {
    try {
      const rows = await api("/admin/bases");
      clear(box).append(table(["base", "version", "source", "created", ""], rows, (b) => {
        const previous = rows.filter((o) => o.name === b.name && o.version < b.version).map((o) => o.version);
        return [b.name, b.version, b.source || "", new Date(b.created_at).toLocaleString(), previous.length
          ? el("button", { type: "button", class: "secondary", onclick: () => compare(b.name, Math.max(...previous), b.version) },
            `Compare with v${Math.max(...previous)}`) : ""];
      }));
    } catch (err) { clear(box).append(el("p", { class: "error" }, err.message)); }
  })();
  root.append(el("section", {}, el("h2", {}, "Base models"), box), chart);
}

function migrationsView(root) {
  const list = el("div", {}, "Loading…");
  const detail = el("section", { id: "migration", hidden: true });
  let selected = null;
  const redraw = repeating(() => draw(), 1500);
  const base = el("input", { name: "base_model", required: true, placeholder: "base model name" });
  const to = el("input", { type: "number", name: "to_version", min: 1, placeholder: "newest" });
  const tenant = el("input", { name: "tenant", placeholder: "every tenant" });
  const error = errorBox();
  const form = el("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      try {
        const job = await api("/admin/migrations", { method: "POST", json: {
          base_model: base.value, to_version: to.value ? Number(to.value) : null, tenants: tenant.value ? [tenant.value] : null } });
        show(job.id);
        refresh();
      } catch (err) { error.textContent = `${err.message}${err.code ? ` (${err.code})` : ""}`; }
    },
  }, el("label", {}, "Base model", base), el("label", {}, "To version", to), el("label", {}, "Only this tenant", tenant),
  el("button", { type: "submit" }, "Start migration"), error);

  async function refresh() {
    try {
      const jobs = (await api("/admin/migrations")).data;
      clear(list).append(jobs.length ? table(["job", "base", "status", "migrated", "kept", "incompatible", ""], jobs, (j) => [
        j.id, `${j.base_model}@${j.from_version} → @${j.to_version}`, j.status, j.progress.migrated, j.progress.kept_on_old,
        j.progress.incompatible, el("button", { type: "button", class: "secondary", onclick: () => show(j.id) }, "Show")])
        : el("p", { class: "muted" }, "No migrations yet."));
    } catch (err) { clear(list).append(el("p", { class: "error" }, err.message)); }
  }

  function rollback(job) {
    const moved = job.progress.migrated;
    const box = el("div", { class: "confirm", role: "alertdialog", "aria-label": "confirm rollback" },
      `Move the ${moved} adapter(s) this job promoted back to @${job.from_version}?`,
      el("button", { type: "button", class: "danger", onclick: async () => {
        try { await api(`/admin/migrations/${job.id}/rollback`, { method: "POST" }); toast("rolled back"); redraw.start(); } catch (err) { toast(err.message); }
      } }, "Roll back"),
      el("button", { type: "button", class: "secondary", onclick: () => box.remove() }, "Keep"));
    return box;
  }

  async function draw() {
    const job = await api(`/admin/migrations/${selected}`);
    const p = job.progress;
    const scored = job.items.filter((i) => i.evidence);
    const label = (i) => `${i.tenant}/${i.adapter}@${i.adapter_version}`;
    const actions = el("div", {});
    if (!ACTIVE.includes(job.status) && p.migrated && job.status !== "rolled_back") {
      actions.append(el("button", { type: "button", class: "danger", onclick: () => actions.replaceChildren(rollback(job)) }, "Roll back…"));
    }
    clear(detail).append(el("h2", {}, `Migration ${job.id}: ${job.base_model}@${job.from_version} → @${job.to_version}`),
      el("p", { id: "migration-status" }, `${job.status}: ${p.finished} of ${p.total} judged; ${p.migrated} migrated, `
        + `${p.kept_on_old} kept on old, ${p.incompatible} incompatible, ${p.errors} not judged, ${p.skipped} skipped`),
      el("progress", { max: Math.max(p.total, 1), value: p.finished }),
      el("h3", {}, "Scores on the eval sets"),
      barChart(scored.map((i) => ({ label: label(i), values: [i.evidence.reference, i.evidence.floor, i.evidence.candidate] })),
        ["reference (old base)", "floor (bare new base)", "candidate (new base)"], { format: pct, label: "scores per adapter" }),
      el("h3", {}, "Retention (candidate / reference) and its lower bound"),
      barChart(scored.filter((i) => i.evidence.retention !== null && i.evidence.retention !== undefined)
        .map((i) => ({ label: label(i), values: [i.evidence.retention], mark: i.evidence.retention_lower })),
      ["retention (dashed: lower confidence bound)"], { max: Math.max(1, ...scored.map((i) => i.evidence.retention || 0)), format: pct, label: "retention" }),
      el("h3", {}, "Decisions"),
      table(["adapter", "decision", "served on", "reasons"], job.items, (i) => [label(i), i.decision || i.state, i.served_on, i.reasons.join("; ")]),
      actions);
    if (!ACTIVE.includes(job.status)) redraw.stop();
  }

  function show(id) {
    selected = id;
    detail.hidden = false;
    redraw.start();
  }

  root.append(el("section", {}, el("h2", {}, "Migrations"), list), detail,
    el("section", {}, el("h2", {}, "Upgrade adapters to a new base version"), form));
  const listing = repeating(refresh, 5000);
  listing.start();
  return () => { listing.stop(); redraw.stop(); };
}

function tenantsView(root) {
  const list = el("div", {}, "Loading…");
  const keys = el("section", { id: "keys", hidden: true });
  const name = el("input", { name: "name", required: true });
  const created = el("p", { role: "status" });
  const error = errorBox();
  const newKey = (tenant, key) => el("p", { class: "new-key" }, `New key for ${tenant} (shown once): `, el("code", {}, key));

  async function showKeys(tenant) {
    try {
      const rows = await api(`/admin/tenants/${encodeURIComponent(tenant)}/keys`);
      clear(keys).append(el("h2", {}, `API keys of ${tenant}`),
        table(["id", "prefix", "created", "revoked", ""], rows, (k) => [k.id, k.prefix, new Date(k.created_at).toLocaleString(),
          k.revoked_at ? new Date(k.revoked_at).toLocaleString() : "",
          k.revoked_at ? "" : el("button", { type: "button", class: "danger", onclick: async () => {
            try { await api(`/admin/tenants/${encodeURIComponent(tenant)}/keys/${k.id}`, { method: "DELETE" }); showKeys(tenant); } catch (err) { toast(err.message); }
          } }, "Revoke")]),
        el("button", { type: "button", onclick: async () => {
          try { const made = await api(`/admin/tenants/${encodeURIComponent(tenant)}/keys`, { method: "POST" }); await showKeys(tenant); keys.append(newKey(tenant, made.api_key)); } catch (err) { toast(err.message); }
        } }, "Create a key"));
      keys.hidden = false;
    } catch (err) { toast(err.message); }
  }

  async function refresh() {
    try {
      const rows = await api("/admin/tenants");
      clear(list).append(table(["tenant", "created", "disabled", ""], rows, (t) => [t.name, new Date(t.created_at).toLocaleString(),
        t.disabled_at ? new Date(t.disabled_at).toLocaleString() : "",
        el("button", { type: "button", class: "secondary", onclick: () => showKeys(t.name) }, "Keys")]));
    } catch (err) { clear(list).append(el("p", { class: "error" }, err.message)); }
  }
  const form = el("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      clear(created);
      try {
        const made = await api("/admin/tenants", { method: "POST", json: { name: name.value } });
        created.append(newKey(made.tenant, made.api_key));
        refresh();
      } catch (err) { error.textContent = err.message; }
    },
  }, el("label", {}, "Tenant name", name), el("button", { type: "submit" }, "Create tenant"), created, error);
  root.append(el("section", {}, el("h2", {}, "Tenants"), list), keys, el("section", {}, el("h2", {}, "New tenant"), form));
  refresh();
}

export const OPERATOR_VIEWS = {
  workers: { title: "Workers", show: workersView },
  bases: { title: "Base models", show: basesView },
  migrations: { title: "Migrations", show: migrationsView },
  tenants: { title: "Tenants & keys", show: tenantsView },
};
