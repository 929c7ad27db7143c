"""How many adapter versions and weight bytes one tenant may hold."""

from dataclasses import dataclass

from adapters.errors import QuotaExceededError
from adapters.registry.models import Tenant


@dataclass(frozen=True)
class AdapterQuota:
    max_adapters: int
    max_bytes: int

    def check(self, tenant: Tenant, count: int, used: int, new_bytes: int) -> None:
        """``count``/``used``: what the tenant holds now (rejected and deleted not counted)."""
        if count + 1 > self.max_adapters:
            raise QuotaExceededError(f"tenant {tenant.name!r} holds {count} adapter versions; the quota is "
                                     f"{self.max_adapters}. Delete some first.", code="adapter_count_quota")
        if used + new_bytes > self.max_bytes:
            raise QuotaExceededError(f"tenant {tenant.name!r} uses {used} bytes; this adapter ({new_bytes} bytes) "
                                     f"would exceed the {self.max_bytes}-byte quota", code="storage_quota")
