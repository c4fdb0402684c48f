"""The catalog and the adapters name the same providers, and an adapter is called what the catalog says."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from billhub.catalog import CATALOG, UnknownProvider, provider_entry
from billhub.providers import REGISTRY, get_adapter


def test_every_catalogued_provider_has_an_adapter_and_every_adapter_is_catalogued() -> None:
    assert set(REGISTRY) == set(CATALOG)
    for name, adapter in REGISTRY.items():
        assert (adapter.name, adapter.display_name, adapter.category) == (
            name,
            CATALOG[name].display_name,
            CATALOG[name].category,
        )


@pytest.mark.parametrize("lookup", [provider_entry, get_adapter])
def test_an_unknown_name_is_refused_with_the_known_ones(lookup: Callable[[str], object]) -> None:
    with pytest.raises(UnknownProvider) as refused:
        lookup("sparkgrid\u200b")
    assert refused.value.details == {"known_providers": sorted(CATALOG)}
