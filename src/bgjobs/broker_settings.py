"""Which settings each broker was built from: what code holding only a broker reads them by."""

from __future__ import annotations

import weakref

import dramatiq

from .settings import Settings, get_settings

__all__ = ["remember", "settings_for"]

_settings: weakref.WeakKeyDictionary[dramatiq.Broker, Settings] = weakref.WeakKeyDictionary()


def remember(broker: dramatiq.Broker, settings: Settings) -> None:
    _settings[broker] = settings


def settings_for(broker: dramatiq.Broker) -> Settings:
    """The settings a broker was built from (the process's settings for a broker built elsewhere)."""
    return _settings.get(broker) or get_settings()
