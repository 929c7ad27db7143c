"""CLI tables at the terminal's width: the columns that fit, short values whole, free text
wrapped, the hidden columns named, and ``--wide`` for all of them."""

from rich.console import Console

from server.cli.command_output import Col, fit_columns
from server.cli.migrate import _items_table

REASON = "gain kept 12.0% < 50% (reference 0.80, floor 0.20, candidate 0.27); screening: inserting 'cf' changed 50%"
JOB = {"id": "mig-1", "base_model": "smollm2-135m", "from_version": 1, "to_version": 2, "status": "succeeded",
       "progress": {"migrated": 1, "kept_on_old": 1, "incompatible": 0, "errors": 0, "skipped": 0, "total": 2},
       "items": [{"tenant": "acme-corporation", "adapter": "customer-support-v3", "adapter_version": 12,
                  "trained_with": "trans-peft", "decision": "kept_on_old", "state": "done",
                  "served_on": "smollm2-135m@1", "reasons": [REASON],
                  "evidence": {"reference": 0.8, "floor": 0.2, "candidate": 0.27, "retention": 0.34,
                               "retention_lower": 0.2, "gain_kept": 0.12, "agreement": 0.1}},
                 {"tenant": "b", "adapter": "x", "adapter_version": 1, "trained_with": "lora", "decision": "migrated",
                  "state": "done", "served_on": "smollm2-135m@2", "reasons": [],
                  "evidence": {"reference": 0.9, "floor": 0.2, "candidate": 0.9, "retention": 1.0}}]}


def rendered(width: int, wide: bool = False) -> list[str]:
    console = Console(width=100_000 if wide else width, record=True)
    console.print(_items_table(JOB, wide=wide, width=width))
    return console.export_text().splitlines()


def test_80_columns_show_who_what_and_why_in_full():
    lines = rendered(80)
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    for whole in ("acme-corporation/customer-support-v3@12", "kept_on_old", "migrated", "decision", "reasons"):
        assert whole in text, whole  # never cut to a few letters
    assert "".join(line.strip("│ ") for line in lines).replace(" ", "").find("changed50%") >= 0  # wrapped, all there
    assert "not shown: served on, cand, ref" in text and "--wide" in text


def test_wider_terminals_get_more_columns_and_wide_gets_all():
    at_120 = "\n".join(rendered(120))
    assert "served on" in at_120 and "smollm2-135m@1" in at_120 and "not shown" in at_120
    wide = rendered(80, wide=True)
    assert max(len(line) for line in wide) > 80
    header = next(line for line in wide if "adapter" in line and "decision" in line)
    for column in ("served on", "cand", "ref", "retention (lower)", "floor", "gain kept", "agree", "trained"):
        assert column in header
    assert not any("not shown" in line for line in wide)


def test_fit_drops_the_most_droppable_first_and_never_the_essential():
    cols = [Col("a"), Col("b", drop=1), Col("c", drop=2), Col("d", wrap=True)]
    rows = [{"a": "x" * 10, "b": "y" * 10, "c": "z" * 10, "d": "w" * 100}]
    assert [c.name for c in fit_columns(cols, rows, 1000)] == ["a", "b", "c", "d"]
    assert [c.name for c in fit_columns(cols, rows, 60)] == ["a", "b", "d"]
    assert [c.name for c in fit_columns(cols, rows, 10)] == ["a", "d"]  # too narrow for anything: essentials stay
