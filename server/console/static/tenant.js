// A tenant's views: adapters (with screening and eval sets), upload, fine-tuning, playground.

import { api, streamChat, upload } from "./api.js";
import { lineChart } from "./charts.js";
import { append, clear, el, repeating, table, toast, when } from "./dom.js";

const ACTIVE_JOB = ["validating_files", "queued", "running"];

function errorBox() {
  return el("p", { class: "error", role: "alert" });
}

function showError(box, err) {
  box.textContent = err.code ? `${err.message} (${err.code})` : err.message;
}

async function models() {
  const list = (await api("/v1/models")).data;
  return { bases: list.filter((m) => m.owned_by === "peftserve"), adapters: list.filter((m) => m.owned_by !== "peftserve") };
}

function screeningCell(a) {
  const verdict = a.screening && a.screening.verdict;
  if (!verdict) return el("span", { class: "muted" }, a.screening ? "recorded" : "");
  if (!verdict.flagged) return "clear";
  return el("span", { class: "flagged", title: verdict.reasons.join("\n") }, `flagged: ${verdict.reasons.join("; ")}`);
}

function adaptersView(root) {
  const list = el("div", {}, "Loading…");
  const names = el("select", { name: "adapter", required: true });
  const file = el("input", { type: "file", name: "eval_set", accept: ".jsonl,application/jsonl", required: true });
  const scoring = el("select", { name: "eval_scoring" }, el("option", {}, "exact_match"), el("option", {}, "contains"));
  const evalError = errorBox();
  const evalForm = el("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      evalError.textContent = "";
      const form = new FormData();
      form.append("eval_set", file.files[0]);
      form.append("eval_scoring", scoring.value);
      try {
        await api(`/v1/adapters/${encodeURIComponent(names.value)}/eval_set`, { method: "PUT", form });
        toast("eval set saved");
        refresh();
      } catch (err) { showError(evalError, err); }
    },
  }, el("label", {}, "Adapter", names), el("label", {}, "Eval set (JSONL of {prompt|messages, expected})", file),
  el("label", {}, "Scoring", scoring), el("button", { type: "submit" }, "Save eval set"), evalError);

  async function refresh() {
    try {
      const rows = (await api("/v1/adapters")).data;
      clear(list).append(rows.length ? table(
        ["name", "version", "status", "base", "why", "screening", "eval set", "description"], rows, (a) => [
          a.name, a.version, el("span", { class: `status-${a.status}` }, a.status),
          `${a.base_model}@${a.base_version}`,
          // a refused adapter's reason already says what its warnings would
          [a.status_reason || "", ...(a.status === "rejected" ? [] : a.warnings)].filter(Boolean).join("; "),
          screeningCell(a), a.eval_items ? `${a.eval_items} items (${a.eval_scoring})` : "none", a.description])
        : el("p", { class: "muted" }, "No adapters yet: upload one."));
      const ready = [...new Set(rows.filter((a) => a.status === "ready").map((a) => a.name))];
      clear(names).append(...ready.map((n) => el("option", { value: n }, n)));
    } catch (err) { clear(list).append(el("p", { class: "error" }, err.message)); }
  }
  root.append(el("section", { id: "adapters" }, el("h2", {}, "Adapters"), list),
    el("section", { id: "eval-sets" }, el("h2", {}, "Eval sets"),
      el("p", { class: "muted" }, "An adapter's eval set judges it when the base model is upgraded."), evalForm));
  refresh();
  const timer = setInterval(refresh, 5000);
  return () => clearInterval(timer);
}

function uploadView(root) {
  const name = el("input", { name: "name", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._-]{0,127}" });
  const files = el("input", { type: "file", name: "file", multiple: true, required: true,
    accept: ".json,.safetensors,.zip,.tar,.gz,.tgz" });
  const base = el("select", { name: "base_model" });
  const trained = el("select", { name: "trained_with" },
    ["unknown", "lora", "trans-peft", "beamlora", "light-peft"].map((m) => el("option", {}, m)));
  const evalSet = el("input", { type: "file", name: "eval_set", accept: ".jsonl" });
  const description = el("input", { name: "description" });
  const bar = el("progress", { max: 1, value: 0, hidden: true });
  const result = el("p", { role: "status" });
  const error = errorBox();
  const submit = el("button", { type: "submit" }, "Upload");
  models().then(({ bases }) => base.append(...bases.map((b) => el("option", { value: b.id }, `${b.id} (v${b.base_version})`))))
    .catch((err) => showError(error, err));
  const form = el("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = result.textContent = "";
      const body = new FormData();
      body.append("name", name.value);
      for (const f of files.files) body.append("file", f);
      if (base.value) body.append("base_model", base.value);
      body.append("trained_with", trained.value);
      body.append("description", description.value);
      if (evalSet.files[0]) body.append("eval_set", evalSet.files[0]);
      bar.hidden = false;
      bar.value = 0;
      submit.disabled = true;
      try {
        const { status, body: adapter } = await upload("/v1/adapters", body, (p) => { bar.value = p; });
        bar.value = 1;
        result.textContent = status === 201
          ? `${adapter.name}@${adapter.version} is ${adapter.status}`
          : `${adapter.name}@${adapter.version} was received; its check on a worker finishes shortly (see Adapters)`;
        if (adapter.warnings.length) append(result, el("br"), el("span", { class: "flagged" }, adapter.warnings.join("; ")));
      } catch (err) {
        showError(error, err);
      } finally {
        submit.disabled = false;
      }
    },
  }, el("label", {}, "Name", name),
  el("label", {}, "Files: adapter_config.json + adapter_model.safetensors, or one .zip/.tar.gz", files),
  el("label", {}, "Base model", base), el("label", {}, "Trained with", trained),
  el("label", {}, "Eval set (optional JSONL)", evalSet), el("label", {}, "Description", description),
  submit, bar, result, error);
  root.append(el("section", {}, el("h2", {}, "Upload an adapter"), form));
}

function fineTuningView(root) {
  const jobs = el("div", {}, "Loading…");
  const detail = el("section", { id: "job", hidden: true });
  let selected = null;
  const redraw = repeating(() => drawJob(), 1500);

  const file = el("input", { type: "file", name: "training_file", accept: ".jsonl", required: true });
  const model = el("select", { name: "model" });
  const method = el("select", { name: "method" },
    ["lora", "trans-peft", "beamlora", "light-peft"].map((m) => el("option", {}, m)));
  const steps = el("input", { type: "number", name: "max_steps", min: 1, value: 30 });
  const suffix = el("input", { name: "suffix", pattern: "[a-z0-9][a-z0-9-]{0,39}" });
  const error = errorBox();
  models().then(({ bases, adapters }) => model.append(
    ...bases.map((b) => el("option", { value: b.id }, `${b.id} (base)`)),
    ...adapters.map((a) => el("option", { value: a.id }, `${a.id} (continue this adapter)`))))
    .catch((err) => showError(error, err));
  const form = el("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      try {
        const body = new FormData();
        body.append("purpose", "fine-tune");
        body.append("file", file.files[0]);
        const uploaded = await api("/v1/files", { method: "POST", form: body });
        const job = await api("/v1/fine_tuning/jobs", { method: "POST", json: {
          model: model.value, training_file: uploaded.id, suffix: suffix.value || undefined,
          method: { type: "supervised", supervised: { hyperparameters: { method: method.value, max_steps: Number(steps.value) } } },
        } });
        toast(`job ${job.id} created`);
        show(job.id);
        refresh();
      } catch (err) { showError(error, err); }
    },
  }, el("label", {}, "Training file (JSONL of {prompt, completion} or {messages})", file),
  el("label", {}, "Model", model), el("label", {}, "Method", method), el("label", {}, "Steps", steps),
  el("label", {}, "Suffix (optional)", suffix), el("button", { type: "submit" }, "Start fine-tuning"), error);

  async function refresh() {
    try {
      const rows = (await api("/v1/fine_tuning/jobs?limit=50")).data;
      clear(jobs).append(rows.length ? table(["job", "model", "status", "fine-tuned model", "created", ""], rows, (j) => [
        j.id, j.model, j.status, j.fine_tuned_model || "", when(j.created_at),
        el("button", { type: "button", class: "secondary", onclick: () => show(j.id) }, "Show")])
        : el("p", { class: "muted" }, "No fine-tuning jobs yet."));
    } catch (err) { clear(jobs).append(el("p", { class: "error" }, err.message)); }
  }

  async function drawJob() {
    const job = await api(`/v1/fine_tuning/jobs/${selected}`);
    const events = (await api(`/v1/fine_tuning/jobs/${selected}/events?limit=10000`)).data;
    const points = events.filter((e) => e.data && e.data.train_loss !== undefined)
      .map((e) => [e.data.step, e.data.train_loss]).sort((a, b) => a[0] - b[0]);
    const active = ACTIVE_JOB.includes(job.status);
    const action = (verb, label, cls) => el("button", { type: "button", class: cls, onclick: async () => {
      try { await api(`/v1/fine_tuning/jobs/${selected}/${verb}`, { method: "POST" }); toast(`${verb} requested`); redraw.start(); } catch (err) { toast(err.message); }
    } }, label);
    const controls = el("div", { class: "actions" });
    if (active) controls.append(action("pause", "Pause", "secondary"), action("cancel", "Cancel", "danger"));
    if (job.status === "paused") controls.append(action("resume", "Resume", "secondary"), action("cancel", "Cancel", "danger"));
    clear(detail).append(el("h2", {}, `Job ${job.id}`),
      el("p", { id: "job-status" }, `${job.status}${job.fine_tuned_model ? ` → ${job.fine_tuned_model}` : ""}`,
        job.error ? el("span", { class: "error" }, ` ${job.error.message}`) : ""),
      el("div", { id: "loss-chart", "data-points": points.length },
        lineChart([{ name: "training loss", points }], { xLabel: "step", yLabel: "loss", label: "training loss" })),
      controls,
      el("h3", {}, "Events"), table(["time", "message"], events.slice(0, 10), (e) => [when(e.created_at), e.message]));
    if (!active && job.status !== "paused") redraw.stop();
  }

  function show(id) {
    selected = id;
    detail.hidden = false;
    redraw.start();
  }

  root.append(el("section", {}, el("h2", {}, "Fine-tuning jobs"), jobs), detail,
    el("section", {}, el("h2", {}, "New fine-tuning job"), form));
  const listing = repeating(refresh, 5000);
  listing.start();
  return () => { listing.stop(); redraw.stop(); };
}

function playgroundView(root) {
  const model = el("select", { name: "model" });
  const prompt = el("textarea", { name: "prompt", rows: 3, required: true }, "Write one sentence about the sea.");
  const tokens = el("input", { type: "number", name: "max_tokens", min: 1, max: 512, value: 48 });
  const withAdapter = el("pre", { class: "output", id: "adapter-output", "aria-live": "polite" });
  const bare = el("pre", { class: "output", id: "base-output", "aria-live": "polite" });
  const adapterTitle = el("h3", {}, "adapter");
  const baseTitle = el("h3", {}, "bare base");
  const error = errorBox();
  const go = el("button", { type: "submit" }, "Run both");
  let baseOf = {};
  models().then(({ adapters }) => {
    baseOf = Object.fromEntries(adapters.map((a) => [a.id, a.base_model]));
    model.append(...adapters.map((a) => el("option", { value: a.id }, a.id)));
  }).catch((err) => showError(error, err));
  const form = el("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = withAdapter.textContent = bare.textContent = "";
      adapterTitle.textContent = model.value;
      baseTitle.textContent = `${baseOf[model.value]} (bare base)`;
      const body = { messages: [{ role: "user", content: prompt.value }], max_tokens: Number(tokens.value), temperature: 0 };
      const run = (name, out) => streamChat({ ...body, model: name }, (t) => { out.textContent += t; });
      go.disabled = true;
      try {
        await Promise.all([run(model.value, withAdapter), run(baseOf[model.value], bare)]);
      } catch (err) { showError(error, err); } finally { go.disabled = false; }
    },
  }, el("label", {}, "Adapter", model), el("label", {}, "Prompt", prompt), el("label", {}, "Max tokens", tokens),
  go, error);
  root.append(el("section", {}, el("h2", {}, "Playground"), form),
    el("section", { class: "row" }, el("div", {}, adapterTitle, withAdapter), el("div", {}, baseTitle, bare)));
}

export const TENANT_VIEWS = {
  adapters: { title: "Adapters", show: adaptersView },
  upload: { title: "Upload", show: uploadView },
  "fine-tuning": { title: "Fine-tuning", show: fineTuningView },
  playground: { title: "Playground", show: playgroundView },
};
