"""Does the migration gate decide right? The gate sees only a tenant-sized eval set (the first
``gate_items`` held-out examples); the truth is the same rule applied to the examples it did
not see, so a wrong decision shows up as a disagreement instead of being true by construction.
Both rules are checked: the default (retention estimate) and the cautious one that judges the
retention's 95% lower confidence bound (``retention_confidence``)."""

from migration.validation_gate.gate import GateThresholds, decide, measure


def verdict(reference: list[bool], floor: list[bool], candidate: list[bool],
            thresholds: GateThresholds = GateThresholds()) -> dict:
    """The product's own measure/decide on these right/wrong flags."""
    outputs = lambda flags: ["ok" if f else "" for f in flags]  # noqa: E731
    evidence = measure(outputs(reference), outputs(candidate), floor_outputs=outputs(floor),
                       expected=["ok"] * len(reference))
    decision = decide(evidence, thresholds)
    return {"decision": decision.decision, "reasons": decision.reasons, "retention": evidence.retention,
            "retention_lower": evidence.retention_lower, "gain_kept": evidence.gain_kept}


def gate_check(reference: list[bool], floor: list[bool], candidate: list[bool], gate_items: int) -> dict:
    seen = slice(0, gate_items)
    unseen = slice(gate_items, None)
    gate = verdict(reference[seen], floor[seen], candidate[seen])
    cautious = verdict(reference[seen], floor[seen], candidate[seen], GateThresholds(retention_confidence=0.95))
    truth = verdict(reference[unseen], floor[unseen], candidate[unseen])
    return {"gate": gate, "cautious_gate": cautious, "truth": truth, "agrees": gate["decision"] == truth["decision"],
            "cautious_agrees": cautious["decision"] == truth["decision"]}
