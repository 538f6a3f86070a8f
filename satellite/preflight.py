"""Settings that cannot work, found before anything is started or created: no database server, no
directory, no key file. Each part checks its own settings; this runs them all, first thing."""

from __future__ import annotations

from satellite.billing import pricing
from satellite.config import Settings
from satellite.lightning import registry
from satellite.storage import factory


def check_settings(settings: Settings) -> None:
    """Raise ConfigError (its message names the setting) for the first setting that cannot work."""
    registry.check_settings(settings)
    pricing.check_settings(settings)
    factory.check_settings(settings)
