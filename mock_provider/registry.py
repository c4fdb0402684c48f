"""The simulated providers in one place, so the app, the fault layer and the admin endpoints agree."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from flask import Blueprint

from mock_provider import clearwater, fibrelink, northgas, sparkgrid


@dataclass(frozen=True)
class Provider:
    blueprint: Blueprint
    account_number: re.Pattern[str]  # what ``/_admin/revise`` accepts as this provider's account
    issues_tokens: bool = False  # OAuth: has a token store and the admin expire/revoke endpoints


PROVIDERS: Mapping[str, Provider] = MappingProxyType(
    {
        sparkgrid.NAME: Provider(sparkgrid.blueprint, sparkgrid.ACCOUNT_NUMBER, issues_tokens=True),
        northgas.NAME: Provider(northgas.blueprint, northgas.ACCOUNT_NUMBER, issues_tokens=True),
        clearwater.NAME: Provider(clearwater.blueprint, clearwater.ACCOUNT_NUMBER),
        fibrelink.NAME: Provider(fibrelink.blueprint, fibrelink.ACCOUNT_NUMBER),
    }
)
