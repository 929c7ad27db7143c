"""The adapter lifecycle: received -> validating -> ready | rejected, any -> deleted (final).

Every status change is a compare-and-set in the database (``Registry.transition``): it names the
states it expects to leave, and does nothing if the row is no longer in one of them. So a
deleted adapter stays deleted (an upload finishing its live check after a DELETE cannot make it
ready again), and a second gateway re-checking a pending adapter cannot write ``validating``
over ``ready``.
"""

from adapters.registry.models import AdapterStatus

S = AdapterStatus
ALLOWED: dict[AdapterStatus, frozenset[AdapterStatus]] = {
    S.received: frozenset({S.received, S.validating, S.rejected, S.deleted}),  # received again: no worker yet
    S.validating: frozenset({S.received, S.validating, S.ready, S.rejected, S.deleted}),
    S.ready: frozenset({S.deleted}),
    S.rejected: frozenset({S.deleted}),
    S.deleted: frozenset(),
}


def check_transition(expect: tuple[AdapterStatus, ...], to: AdapterStatus) -> None:
    """A programming error, not a race: a transition the lifecycle never allows."""
    for state in expect:
        if to not in ALLOWED[state]:
            raise ValueError(f"adapter status {state.value} -> {to.value} is not a lifecycle transition")
