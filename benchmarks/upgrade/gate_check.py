"""Does the migration gate decide right? The gate sees only a tenant-sized eval set (the first
``gate_items`` held-out examples); the truth is the same rule applied to the examples it did
not see, so a wrong decision shows up as a disagreement instead of being true by construction."""

from migration.validation_gate.gate import GateThresholds, decide, measure


def verdict(reference: list[bool], floor: list[bool], candidate: list[bool]) -> dict:
    """The product's own measure/decide on these right/wrong flags, default thresholds."""
    outputs = lambda flags: ["ok" if f else "" for f in flags]  # noqa: E731
    evidence = measure(outputs(reference), outputs(candidate), floor_outputs=outputs(floor),
                       expected=["ok"] * len(reference))
    decision = decide(evidence, GateThresholds())
    return {"decision": decision.decision, "reasons": decision.reasons, "retention": evidence.retention,
            "gain_kept": evidence.gain_kept}


def gate_check(reference: list[bool], floor: list[bool], candidate: list[bool], gate_items: int) -> dict:
    seen = slice(0, gate_items)
    unseen = slice(gate_items, None)
    gate = verdict(reference[seen], floor[seen], candidate[seen])
    truth = verdict(reference[unseen], floor[unseen], candidate[unseen])
    return {"gate": gate, "truth": truth, "agrees": gate["decision"] == truth["decision"]}
