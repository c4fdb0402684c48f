"""The providers the service knows, by name: what each is called and what it bills for.

What reading bills needs from the providers is only this; importing the adapters for it (their HTTP,
auth and payload code) cost every cold start of GET /bills ~10 ms. Each adapter takes its display name
and category from here (``ProviderAdapter.__init_subclass__``), so they are written once.
"""

from __future__ import annotations

from dataclasses import dataclass

from billhub.errors import ServiceError
from billhub.models import Category


@dataclass(frozen=True)
class ProviderEntry:
    name: str
    display_name: str
    category: Category


CATALOG: dict[str, ProviderEntry] = {
    entry.name: entry
    for entry in (
        ProviderEntry("sparkgrid", "SparkGrid Energy", Category.ELECTRICITY),
        ProviderEntry("northgas", "NorthGas", Category.GAS),
        ProviderEntry("clearwater", "ClearWater Utilities", Category.WATER),
        ProviderEntry("fibrelink", "FibreLink Broadband", Category.INTERNET),
    )
}


class UnknownProvider(ServiceError):
    status = 400
    code = "unknown_provider"


def provider_entry(name: str) -> ProviderEntry:
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownProvider(
            f"Unknown provider '{name[:40]}'.", details={"known_providers": sorted(CATALOG)}
        ) from None
