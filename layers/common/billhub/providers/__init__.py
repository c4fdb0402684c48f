"""Provider adapters and the registry that names them. A new provider is one module, one line here and one
in ``billhub.catalog`` (its display name and category)."""

from __future__ import annotations

from billhub.catalog import UnknownProvider, provider_entry
from billhub.providers.base import ProviderAdapter
from billhub.providers.clearwater import ClearWaterAdapter
from billhub.providers.fibrelink import FibreLinkAdapter
from billhub.providers.northgas import NorthGasAdapter
from billhub.providers.sparkgrid import SparkGridAdapter

REGISTRY: dict[str, ProviderAdapter] = {
    adapter.name: adapter
    for adapter in (SparkGridAdapter(), NorthGasAdapter(), ClearWaterAdapter(), FibreLinkAdapter())
}


__all__ = ["REGISTRY", "UnknownProvider", "get_adapter"]


def get_adapter(name: str) -> ProviderAdapter:
    """The adapter of a provider the catalog names (``UnknownProvider`` for any other name)."""
    return REGISTRY[provider_entry(name).name]
