"""The providers the service knows, by name: what each is called and what it bills for.

What reading bills needs from the providers is only this; importing the adapters for it (their HTTP,
auth and payload code) cost every cold start of GET /bills ~10 ms. Each adapter takes its display name
and category from here (``ProviderAdapter.__init_subclass__``), so they are written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, StringConstraints

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


# What a provider name may look like (checked first, as a 422); a well-formed name the catalog lacks is a
# 400 ``unknown_provider`` listing the known ones. The API documents the names themselves
# (``PROVIDER_NAMES_SCHEMA``, added to the pattern), so a client built from docs/openapi.json sends no other.
PROVIDER_NAME_PATTERN = r"^[a-z][a-z0-9_-]{1,31}$"
PROVIDER_NAMES_SCHEMA: dict[str, Any] = {"enum": sorted(CATALOG)}
ProviderName = Annotated[
    str, StringConstraints(pattern=PROVIDER_NAME_PATTERN), Field(json_schema_extra=PROVIDER_NAMES_SCHEMA)
]


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
