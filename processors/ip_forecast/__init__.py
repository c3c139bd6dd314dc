"""``ip_forecast``: hours until IP exhaustion, from the trend of assigned (or available) addresses
against capacity. The entry point names :data:`factory`."""

from .config import ForecastConfig, IpForecastConfig
from .factory import IpForecastFactory, factory

__all__ = ["ForecastConfig", "IpForecastConfig", "IpForecastFactory", "factory"]
