"""PNG chart of a compatibility report: per-layer change of attention vs FFN."""

import io

import matplotlib

matplotlib.use("Agg")  # no display on servers
import matplotlib.pyplot as plt  # noqa: E402


def report_chart_png(report: dict) -> bytes:
    layers = [row["layer"] for row in report["per_layer"]]
    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    width = 0.4
    ax.bar([x - width / 2 for x in layers], [r["attention"] for r in report["per_layer"]], width, label="attention")
    ax.bar([x + width / 2 for x in layers], [r["ffn"] for r in report["per_layer"]], width, label="FFN")
    emb = report["groups"].get("embeddings", {}).get("relative_change")
    if emb is not None:
        ax.axhline(emb, color="gray", linestyle="--", linewidth=1, label=f"embeddings ({emb:.2%})")
    ax.set_xlabel("layer")
    ax.set_ylabel("||W_new - W_old|| / ||W_old||")
    ax.set_title(f"Weight change {report['from']} -> {report['to']}")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.legend()
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()
