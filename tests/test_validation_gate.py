"""The migration gate's arithmetic and decisions, table-driven (pure functions, no fakes)."""

import pytest

from migration.validation_gate.gate import GateThresholds, decide, measure, score

EXPECTED = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
WRONG = ["x"] * 10


def outputs(right: int) -> list[str]:
    """The first ``right`` answers right, the rest wrong."""
    return EXPECTED[:right] + WRONG[right:]


@pytest.mark.parametrize("case,reference,floor,candidate,decision,reason", [
    ("transfer keeps the gain", 9, 2, 9, "migrated", None),
    ("small loss within thresholds", 10, 2, 9, "migrated", None),
    ("retention too low", 10, 2, 6, "kept_on_old", "retention"),
    ("silent no-op: scores like the bare base", 6, 5, 5, "kept_on_old", "gain kept"),
    ("no measurable gain: gain kept not judged", 5, 5, 5, "migrated", None),
])
def test_decisions_follow_scores_and_thresholds(case, reference, floor, candidate, decision, reason):
    t = GateThresholds(min_retention=0.85, min_gain_kept=0.5, max_negative_flip_rate=0.2, min_gain=0.05)
    evidence = measure(outputs(reference), outputs(candidate), floor_outputs=outputs(floor), expected=EXPECTED)
    result = decide(evidence, t)
    assert result.decision == decision, (case, result.reasons)
    assert (reason is None) == (not result.reasons)
    if reason:
        assert any(reason in r for r in result.reasons), result.reasons


def test_silent_no_op_fails_gain_kept_even_with_high_retention():
    # The bare new base is already good (8/10); the adapter adds 2 points on the old base and
    # nothing on the new one: retention 0.8/1.0 = 80% would pass a lenient retention bar.
    evidence = measure(outputs(10), outputs(8), floor_outputs=outputs(8), expected=EXPECTED)
    assert evidence.gain_kept == 0.0 and evidence.retention == pytest.approx(0.8)
    result = decide(evidence, GateThresholds(min_retention=0.75))
    assert result.decision == "kept_on_old" and "gain kept" in result.reasons[0]


def test_negative_flips_and_agreement():
    reference = ["a", "b", "c", "x"]
    candidate = ["a", "x", "c", "d"]  # one right->wrong flip, one wrong->right
    evidence = measure(reference, candidate, floor_outputs=["x"] * 4, expected=["a", "b", "c", "d"])
    assert evidence.negative_flip_rate == 0.25 and evidence.agreement == 0.5
    assert "negative flips" in decide(evidence, GateThresholds(max_negative_flip_rate=0.2)).reasons[-1]


def test_without_eval_set_agreement_is_the_weaker_evidence():
    evidence = measure(["a", "b", "c", "d"], ["a", "b", "c", "z"])
    assert evidence.kind == "agreement_only" and evidence.agreement == 0.75 and evidence.reference is None
    assert decide(evidence, GateThresholds(min_agreement_without_eval=0.7)).decision == "migrated"
    kept = decide(evidence, GateThresholds(min_agreement_without_eval=0.8))
    assert kept.decision == "kept_on_old" and "weaker evidence" in kept.reasons[0]


def test_scoring_modes():
    assert score([" Paris ", "paris"], ["Paris", "Paris"], "exact_match") == [True, False]
    assert score(["It is Paris.", "Rome"], ["paris", "Paris"], "contains") == [True, False]
    with pytest.raises(ValueError):
        score(["a"], ["a"], "fuzzy")


async def test_eval_sets_run_on_a_real_worker_and_feed_the_gate(gateway, lora_factory):
    import httpx

    from adapters.format.eval_set import parse_eval_set
    from server.workers.worker_client import WorkerClient
    from tests.gateway_harness import WORKER_API_KEY, WORKER_HEADERS
    from migration.validation_gate.eval_runner import generate_outputs

    items = parse_eval_set(b'{"prompt": "The quick brown fox", "expected": "jumps"}\n'
                           b'{"messages": [{"role": "user", "content": "Say hi"}], "expected": "hi"}\n'
                           b'{"prompt": "Once upon a time", "expected": "there"}\n')
    url = gateway.worker()["url"]
    folder = lora_factory(95)
    async with httpx.AsyncClient(base_url=url, headers=WORKER_HEADERS) as raw:
        (await raw.post("/v1/load_lora_adapter", json={"lora_name": "gate-test", "lora_path": str(folder)})
         ).raise_for_status()
    client = WorkerClient("tiny@1", url, timeout_s=120, api_key=WORKER_API_KEY)
    try:
        adapter_out = await generate_outputs(client, "gate-test", items, max_tokens=8)
        again = await generate_outputs(client, "gate-test", items, max_tokens=8)
        base_out = await generate_outputs(client, "base", items, max_tokens=8)
    finally:
        async with httpx.AsyncClient(base_url=url, headers=WORKER_HEADERS) as raw:
            await raw.post("/v1/unload_lora_adapter", json={"lora_name": "gate-test"})
        await client.aclose()
    assert len(adapter_out) == 3 and all(adapter_out)
    assert measure(adapter_out, again).agreement == 1.0  # greedy outputs are reproducible
    changed = measure(adapter_out, base_out)  # as if the transfer had lost the adapter entirely
    assert changed.agreement < 1.0 and decide(changed, GateThresholds()).decision == "kept_on_old"
    scored = measure(adapter_out, again, floor_outputs=base_out, expected=[i.expected for i in items])
    assert scored.kind == "eval_set" and scored.items == 3


def flags(right: int, of: int) -> list[bool]:
    return [True] * right + [False] * (of - right)


def test_the_retention_bound_widens_with_fewer_items_and_can_be_judged_on():
    # Old base 20/40 right; new base keeps 19 of them: retention 95%, but 40 items at 50%
    # accuracy vouch for much less; 400 items with the same shares vouch for nearly all of it.
    small = measure(["a" if f else "x" for f in flags(20, 40)], ["a" if f else "x" for f in flags(19, 40)],
                    floor_outputs=["x"] * 40, expected=["a"] * 40)
    large = measure(["a" if f else "x" for f in flags(200, 400)], ["a" if f else "x" for f in flags(190, 400)],
                    floor_outputs=["x"] * 400, expected=["a"] * 400)
    assert small.retention == large.retention == pytest.approx(0.95)
    assert small.retention_lower < 0.9 < large.retention_lower < 0.95 and small.confidence == 0.95
    assert decide(small, GateThresholds()).decision == "migrated"  # the estimate passes
    kept = decide(small, GateThresholds(retention_confidence=0.95))
    assert kept.decision == "kept_on_old" and "larger eval set" in kept.reasons[0]
    assert decide(large, GateThresholds(retention_confidence=0.95)).decision == "migrated"


def test_the_retention_bound_is_the_estimate_when_every_item_agrees():
    same = measure(["a"] * 30, ["a"] * 30, floor_outputs=["x"] * 30, expected=["a"] * 30)
    assert same.retention == same.retention_lower == 1.0
    assert decide(same, GateThresholds(retention_confidence=0.95)).decision == "migrated"
