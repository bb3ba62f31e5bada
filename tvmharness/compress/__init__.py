"""Compression techniques as recipe variants, one registry.

A variant string names the technique ("fp32" is the model as given, the baseline every other
variant is compared with)."""

from __future__ import annotations

from ..errors import HarnessError
from ..models import LoadedModel

BASELINE = "fp32"


def _identity(model: LoadedModel) -> LoadedModel:
    return model


REGISTRY = {BASELINE: _identity}


def check_variant(variant: str) -> None:
    if variant not in REGISTRY:
        raise HarnessError(f"unknown variant '{variant}'; known variants: {', '.join(REGISTRY)}", "use one of those")


def apply_variant(model: LoadedModel, variant: str) -> LoadedModel:
    check_variant(variant)
    return REGISTRY[variant](model)
