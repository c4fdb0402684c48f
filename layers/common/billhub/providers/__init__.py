"""Provider adapters and the registry that names them. A new provider is one module and one line here."""

from __future__ import annotations

from billhub.errors import ServiceError
from billhub.providers.base import ProviderAdapter
from billhub.providers.clearwater import ClearWaterAdapter
from billhub.providers.fibrelink import FibreLinkAdapter
from billhub.providers.northgas import NorthGasAdapter
from billhub.providers.sparkgrid import SparkGridAdapter

REGISTRY: dict[str, ProviderAdapter] = {
    adapter.name: adapter
    for adapter in (SparkGridAdapter(), NorthGasAdapter(), ClearWaterAdapter(), FibreLinkAdapter())
}


class UnknownProvider(ServiceError):
    status = 400
    code = "unknown_provider"


def get_adapter(name: str) -> ProviderAdapter:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownProvider(
            f"Unknown provider '{name[:40]}'.", details={"known_providers": sorted(REGISTRY)}
        ) from None
