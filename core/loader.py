"""Finds the adapter of a backend by name; a missing library is one clear line."""

from __future__ import annotations

import importlib
from types import ModuleType

from core.errors import ConfigError
from core.settings import BACKENDS


def adapter_module(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise ConfigError(f"QUEUE_BACKEND={name!r} is not one of: {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(f"backends.{name}_impl")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("backends"):
            raise
        raise ConfigError(
            f"QUEUE_BACKEND={name}: its library is not installed here ({exc.name}); "
            f"install it with: pip install 'queuebench[{name}]'"
        ) from None
