"""A migration job's report as a self-contained HTML page: a chart of each adapter's scores on
the old base (reference), the bare new base (floor) and the new base (candidate), then a table
of decisions and reasons."""

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")  # no display on servers
import matplotlib.pyplot as plt  # noqa: E402

BAR_SERIES = (("reference", "old base + adapter"), ("floor", "bare new base"), ("candidate", "new base + adapter"))


def scores_chart_png(job: dict) -> bytes:
    """Grouped bars per adapter; adapters judged on agreement only show their agreement."""
    items = [i for i in job["items"] if i["evidence"]]
    labels = [f"{i['tenant']}/{i['adapter']}@{i['adapter_version']}" for i in items]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(items) + 2), 4), dpi=100)
    width = 0.25
    for k, (key, label) in enumerate(BAR_SERIES):
        values = [(i["evidence"].get(key) if i["evidence"]["kind"] == "eval_set" else None) for i in items]
        ax.bar([x + (k - 1) * width for x in range(len(items))], [v or 0.0 for v in values], width, label=label)
    agreement = [i["evidence"]["agreement"] for i in items]
    ax.scatter(range(len(items)), agreement, marker="D", color="black", zorder=3, label="agreement with old")
    ax.set_xticks(range(len(items)), labels, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score on the adapter's eval set")
    ax.set_title(f"Migration {job['id']}: {job['base_model']}@{job['from_version']} -> @{job['to_version']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


def _fmt(value) -> str:
    return "" if value is None else f"{value:.1%}" if isinstance(value, float) else html.escape(str(value))


def report_html(job: dict) -> str:
    chart = base64.b64encode(scores_chart_png(job)).decode()
    columns = ["reference", "floor", "candidate", "retention", "retention_lower", "gain_kept", "negative_flip_rate",
               "agreement"]
    rows = []
    for i in job["items"]:
        e = i["evidence"] or {}
        cells = [f"{i['tenant']}/{i['adapter']}@{i['adapter_version']}", i["trained_with"], i["state"],
                 i["decision"] or "", e.get("kind", ""), *(e.get(c) for c in columns), i["served_on"],
                 "; ".join(i["reasons"])]
        rows.append("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in cells) + "</tr>")
    skipped = "".join(f"<li>{html.escape(s['tenant'])}/{html.escape(s['adapter'])}: {html.escape(s['reason'])}</li>"
                      for s in job["skipped_at_start"])
    p = job["progress"]
    header = ["adapter", "trained with", "state", "decision", "evidence", *columns, "served on", "reasons"]
    thresholds = ", ".join(f"{k} = {v}" for k, v in job["thresholds"].items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Migration {html.escape(job['id'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}th{{background:#f3f3f3}}</style></head>
<body>
<h1>Migration {html.escape(job['id'])}</h1>
<p>{html.escape(job['base_model'])}@{job['from_version']} &rarr; @{job['to_version']}:
<b>{html.escape(job['status'])}</b>.
{p['finished']}/{p['total']} adapters finished: {p['migrated']} migrated, {p['kept_on_old']} kept on the old
version, {p['incompatible']} incompatible, {p.get('errors', 0)} could not be judged, {p['skipped']} skipped.</p>
<p>Gate thresholds: {html.escape(thresholds)}. Evidence <i>agreement_only</i> (no eval set) is weaker.</p>
<img alt="scores per adapter" src="data:image/png;base64,{chart}">
<table><tr>{''.join(f'<th>{h}</th>' for h in header)}</tr>
{''.join(rows)}
</table>
{f'<h2>Left out</h2><ul>{skipped}</ul>' if skipped else ''}
</body></html>
"""
