"""Canonical units per quantity, so that a sensor reporting °F or kW joins the same series as °C or W.

The conversion applied is returned by name and recorded in `core.entities`, so a unit change on a
device never splits its history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Conversion:
    name: str | None
    unit: str | None
    apply: Callable[[float], float]


def _identity(x: float) -> float:
    return x


# unit as Home Assistant spells it -> (quantity, canonical unit, conversion name, function)
_UNITS: dict[str, tuple[str, str, str | None, Callable[[float], float]]] = {
    "°C": ("temperature", "°C", None, _identity),
    "°F": ("temperature", "°C", "degF->degC", lambda f: (f - 32.0) * 5.0 / 9.0),
    "K": ("temperature", "°C", "K->degC", lambda k: k - 273.15),
    "W": ("power", "W", None, _identity),
    "kW": ("power", "W", "kW->W", lambda x: x * 1_000.0),
    "MW": ("power", "W", "MW->W", lambda x: x * 1_000_000.0),
    "Wh": ("energy", "kWh", "Wh->kWh", lambda x: x / 1_000.0),
    "kWh": ("energy", "kWh", None, _identity),
    "MWh": ("energy", "kWh", "MWh->kWh", lambda x: x * 1_000.0),
    "V": ("voltage", "V", None, _identity),
    "A": ("current", "A", None, _identity),
    "mA": ("current", "A", "mA->A", lambda x: x / 1_000.0),
    "hPa": ("pressure", "hPa", None, _identity),
    "Pa": ("pressure", "hPa", "Pa->hPa", lambda x: x / 100.0),
    "kPa": ("pressure", "hPa", "kPa->hPa", lambda x: x * 10.0),
    "mbar": ("pressure", "hPa", None, _identity),
    "lx": ("illuminance", "lx", None, _identity),
    "ppm": ("concentration_ppm", "ppm", None, _identity),
    "µg/m³": ("concentration_ugm3", "µg/m³", None, _identity),
    "dBm": ("signal_strength", "dBm", None, _identity),
}
# Device classes whose canonical unit is the percentage, where the unit alone would be ambiguous.
_PERCENT_CLASSES = frozenset({"humidity", "battery", "moisture"})


def quantity_for_unit(unit: str | None) -> str | None:
    return _UNITS[unit][0] if unit in _UNITS else None


def conversion_for(unit: str | None) -> Conversion:
    if unit in _UNITS:
        _, canonical, name, func = _UNITS[unit]
        return Conversion(name, canonical, func)
    return Conversion(None, unit, _identity)


def is_percent_class(device_class: str | None) -> bool:
    return device_class in _PERCENT_CLASSES
