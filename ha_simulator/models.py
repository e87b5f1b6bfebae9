"""How each kind's values evolve: smooth daily curves, sensor noise, appliances switching, counters that
only grow (until a meter reset), batteries that drain. Pure and seeded: a model draws only from the
device's own `random.Random`, so the same seed always gives the same values, whatever the format.

States are returned as Home Assistant state strings ("21.37", "97", "on"), which are also valid JSON
literals for zigbee2mqtt's payload (numbers) or are mapped by the entity spec (binary sensors).
"""

from __future__ import annotations

import math
import random
from typing import Final, Protocol

from ha_simulator.const import CADENCE_JITTER, METER_RESET_AFTER_DROPOUT_PROBABILITY, METER_RESET_MAX_WH
from ha_simulator.kinds import CLIMATE, DOOR, METER, OUTDOOR, PLUG, DeviceKind

US_PER_S: Final = 1_000_000
DAY_S: Final = 86_400.0
HOUR_S: Final = 3_600.0
TWO_PI: Final = 2 * math.pi

# Climate: indoor rooms are stable, outdoors swings with the sun; humidity moves against temperature.
INDOOR_BASE_C: Final = (19.0, 23.0)
INDOOR_AMPLITUDE_C: Final = (0.8, 2.5)
OUTDOOR_BASE_C: Final = (5.0, 18.0)
OUTDOOR_AMPLITUDE_C: Final = (4.0, 8.0)
PEAK_HOUR: Final = (13.0, 17.0)
DRIFT_KEEP: Final = 0.95
DRIFT_SD_C: Final = 0.05
NOISE_SD_C: Final = 0.05
HUMIDITY_BASE: Final = (35.0, 60.0)
HUMIDITY_PER_DEGREE: Final = 1.5
HUMIDITY_NOISE: Final = 0.8
# Batteries: a coin cell lasts one to two years; per-device drain rates spread around that.
BATTERY_START: Final = (35.0, 100.0)
BATTERY_DRAIN_PER_DAY: Final = (0.1, 0.4)
BATTERY_MIN: Final = 1
# Zigbee link quality (0-255) wanders around a per-device level that depends on the distance.
LQI_BASE: Final = (40.0, 200.0)
LQI_SD: Final = 12.0
LQI_MAX: Final = 255
# Plugs: an appliance that switches on and off, with a standby draw in between.
APPLIANCE_W: Final = (60.0, 2_200.0)
STANDBY_W: Final = (0.3, 2.5)
MEAN_ON_S: Final = (300.0, 1_800.0)
MEAN_OFF_S: Final = (600.0, 7_200.0)
ON_NOISE: Final = 0.03
STANDBY_NOISE: Final = 0.05
PLUG_START_KWH: Final = (0.0, 500.0)
# Meters: a household's load with morning and evening peaks, counters starting anywhere.
HOUSE_BASE_KW: Final = (0.15, 0.5)
HOUSE_PEAK_KW: Final = (0.8, 3.0)
MORNING_PEAK_H: Final = 7.5
EVENING_PEAK_H: Final = 19.0
PEAK_WIDTH_H: Final = 1.5
HOUSE_NOISE_KW: Final = 0.05
HOUSE_MIN_KW: Final = 0.05
METER_START_WH: Final = (100_000.0, 5_000_000.0)
WH_PER_KWH: Final = 1_000.0
# Doors: closed most of the time, opened for a short while, zigbee check-in every ~50 minutes.
DOOR_MEAN_CLOSED_S: Final = 2_700.0
DOOR_OPEN_S: Final = (10.0, 180.0)
DOOR_CHECKIN_S: Final = 3_000.0
DOOR_MIN_INTERVAL_S: Final = 1.0


class Model(Protocol):
    """The value behaviour of one device."""

    def states(self, t_us: int) -> tuple[str, ...]:
        """The state of each entity (in the kind's entity order) at `t_us`."""
        ...

    def next_interval_s(self) -> float:
        """Seconds until the device reports again."""
        ...

    def restarted(self) -> None:
        """The device came back after a dropout (a meter may have lost its counter)."""
        ...

    @property
    def resets(self) -> int:
        """Meter resets so far (0 for kinds without a counter that resets)."""
        ...


def hour_of_day(t_us: int) -> float:
    return (t_us / US_PER_S % DAY_S) / HOUR_S


def jittered(rng: random.Random, cadence_s: float) -> float:
    return cadence_s * rng.uniform(1 - CADENCE_JITTER, 1 + CADENCE_JITTER)


def decimal(value: float, digits: int) -> str:
    """The shortest decimal text of `value` rounded, as Home Assistant and zigbee2mqtt (JSON) print it."""
    return repr(round(value, digits))


class _Battery:
    """A battery that drains at a constant per-device rate; reported as an integer percentage."""

    __slots__ = ("drain_per_us", "level")

    def __init__(self, rng: random.Random) -> None:
        self.level = rng.uniform(*BATTERY_START)
        self.drain_per_us = rng.uniform(*BATTERY_DRAIN_PER_DAY) / (DAY_S * US_PER_S)

    def state(self, dt_us: int) -> str:
        self.level = max(float(BATTERY_MIN), self.level - self.drain_per_us * dt_us)
        return str(int(self.level))


class _LinkQuality:
    __slots__ = ("base",)

    def __init__(self, rng: random.Random) -> None:
        self.base = rng.uniform(*LQI_BASE)

    def state(self, rng: random.Random) -> str:
        return str(min(LQI_MAX, max(0, int(self.base + rng.gauss(0, LQI_SD)))))


class ClimateModel:
    """Temperature and humidity: a daily curve peaking in the afternoon, slow drift and sensor noise."""

    __slots__ = ("amplitude", "base", "battery", "cadence_s", "drift", "fahrenheit", "humidity_base", "last_us",
                 "lqi", "peak", "rng")

    def __init__(self, rng: random.Random, kind: DeviceKind, start_us: int, *, outdoor: bool) -> None:
        self.rng = rng
        self.cadence_s = kind.cadence_s
        self.fahrenheit = kind.entities[0].unit == "°F"
        self.base = rng.uniform(*(OUTDOOR_BASE_C if outdoor else INDOOR_BASE_C))
        self.amplitude = rng.uniform(*(OUTDOOR_AMPLITUDE_C if outdoor else INDOOR_AMPLITUDE_C))
        self.peak = rng.uniform(*PEAK_HOUR)
        self.humidity_base = rng.uniform(*HUMIDITY_BASE)
        self.drift = 0.0
        self.battery = _Battery(rng)
        self.lqi = _LinkQuality(rng)
        self.last_us = start_us

    def states(self, t_us: int) -> tuple[str, ...]:
        rng = self.rng
        daily = math.cos(TWO_PI * (hour_of_day(t_us) - self.peak) / 24)
        self.drift = DRIFT_KEEP * self.drift + rng.gauss(0, DRIFT_SD_C)
        celsius = self.base + self.amplitude * daily + self.drift + rng.gauss(0, NOISE_SD_C)
        humidity = min(100.0, max(0.0, self.humidity_base - HUMIDITY_PER_DEGREE * (celsius - self.base)
                                  + rng.gauss(0, HUMIDITY_NOISE)))
        temperature = decimal(celsius * 9 / 5 + 32, 1) if self.fahrenheit else decimal(celsius, 2)
        battery = self.battery.state(t_us - self.last_us)
        self.last_us = t_us
        return temperature, decimal(humidity, 2), battery, self.lqi.state(rng)

    def next_interval_s(self) -> float:
        return jittered(self.rng, self.cadence_s)

    def restarted(self) -> None:
        """A sensor keeps nothing worth resetting."""

    @property
    def resets(self) -> int:
        return 0


class PlugModel:
    """An appliance behind a plug switching on and off; the kWh counter integrates the power drawn."""

    __slots__ = ("appliance_w", "cadence_s", "energy_kwh", "last_us", "lqi", "mean_off_s", "mean_on_s", "on",
                 "power_w", "rng", "standby_w", "switch_us")

    def __init__(self, rng: random.Random, kind: DeviceKind, start_us: int) -> None:
        self.rng = rng
        self.cadence_s = kind.cadence_s
        self.appliance_w = rng.uniform(*APPLIANCE_W)
        self.standby_w = rng.uniform(*STANDBY_W)
        self.mean_on_s = rng.uniform(*MEAN_ON_S)
        self.mean_off_s = rng.uniform(*MEAN_OFF_S)
        self.on = rng.random() < self.mean_on_s / (self.mean_on_s + self.mean_off_s)
        self.switch_us = start_us + self._duration_us()
        self.energy_kwh = rng.uniform(*PLUG_START_KWH)
        self.power_w = 0.0
        self.lqi = _LinkQuality(rng)
        self.last_us = start_us

    def _duration_us(self) -> int:
        return int(self.rng.expovariate(1 / (self.mean_on_s if self.on else self.mean_off_s)) * US_PER_S)

    def states(self, t_us: int) -> tuple[str, ...]:
        rng = self.rng
        # The counter grows by what was drawn since the last report (the plug integrates internally).
        self.energy_kwh += self.power_w * (t_us - self.last_us) / (HOUR_S * US_PER_S) / WH_PER_KWH
        self.last_us = t_us
        while t_us >= self.switch_us:
            self.on = not self.on
            self.switch_us += self._duration_us()
        if self.on:
            self.power_w = self.appliance_w * (1 + rng.gauss(0, ON_NOISE))
        else:
            self.power_w = self.standby_w * (1 + rng.gauss(0, STANDBY_NOISE))
        self.power_w = max(0.0, self.power_w)
        return decimal(self.power_w, 1), decimal(self.energy_kwh, 2), self.lqi.state(rng)

    def next_interval_s(self) -> float:
        return jittered(self.rng, self.cadence_s)

    def restarted(self) -> None:
        """Plugs keep their lifetime counter in flash: a restart changes nothing."""

    @property
    def resets(self) -> int:
        return 0


class MeterModel:
    """A household's load in kW and its Wh counter; now and then the counter restarts near zero."""

    __slots__ = ("_resets", "base_kw", "cadence_s", "energy_wh", "last_us", "peak_kw", "power_kw",
                 "reset_per_us", "rng")

    def __init__(self, rng: random.Random, kind: DeviceKind, start_us: int, resets_per_day: float) -> None:
        self.rng = rng
        self.cadence_s = kind.cadence_s
        self.base_kw = rng.uniform(*HOUSE_BASE_KW)
        self.peak_kw = rng.uniform(*HOUSE_PEAK_KW)
        self.energy_wh = rng.uniform(*METER_START_WH)
        self.power_kw = self.base_kw
        self.reset_per_us = resets_per_day / (DAY_S * US_PER_S)
        self.last_us = start_us
        self._resets = 0

    def _reset(self) -> None:
        self.energy_wh = self.rng.uniform(0.0, METER_RESET_MAX_WH)
        self._resets += 1

    def states(self, t_us: int) -> tuple[str, ...]:
        rng = self.rng
        dt_us = t_us - self.last_us
        self.energy_wh += self.power_kw * WH_PER_KWH * dt_us / (HOUR_S * US_PER_S)
        self.last_us = t_us
        if rng.random() < self.reset_per_us * dt_us:
            self._reset()
        hour = hour_of_day(t_us)
        peaks = (math.exp(-(((hour - MORNING_PEAK_H) / PEAK_WIDTH_H) ** 2))
                 + math.exp(-(((hour - EVENING_PEAK_H) / PEAK_WIDTH_H) ** 2)))
        self.power_kw = max(HOUSE_MIN_KW, self.base_kw + self.peak_kw * peaks + rng.gauss(0, HOUSE_NOISE_KW))
        return decimal(self.power_kw, 3), decimal(self.energy_wh, 1)

    def next_interval_s(self) -> float:
        return jittered(self.rng, self.cadence_s)

    def restarted(self) -> None:
        if self.rng.random() < METER_RESET_AFTER_DROPOUT_PROBABILITY:
            self._reset()

    @property
    def resets(self) -> int:
        return self._resets


class DoorModel:
    """A door contact: long closed spells, short open ones; reports on every change and at check-in."""

    __slots__ = ("battery", "last_us", "lqi", "open", "rng", "switch_us")

    def __init__(self, rng: random.Random, kind: DeviceKind, start_us: int) -> None:
        self.rng = rng
        self.open = False
        self.switch_us = start_us + int(rng.expovariate(1 / DOOR_MEAN_CLOSED_S) * US_PER_S)
        self.battery = _Battery(rng)
        self.lqi = _LinkQuality(rng)
        self.last_us = start_us

    def states(self, t_us: int) -> tuple[str, ...]:
        rng = self.rng
        if t_us >= self.switch_us:
            self.open = not self.open
            span_s = rng.uniform(*DOOR_OPEN_S) if self.open else rng.expovariate(1 / DOOR_MEAN_CLOSED_S)
            self.switch_us = t_us + int(span_s * US_PER_S)
        battery = self.battery.state(t_us - self.last_us)
        self.last_us = t_us
        return ("on" if self.open else "off"), battery, self.lqi.state(rng)

    def next_interval_s(self) -> float:
        checkin_s = jittered(self.rng, DOOR_CHECKIN_S)
        until_switch_s = (self.switch_us - self.last_us) / US_PER_S
        return max(DOOR_MIN_INTERVAL_S, min(checkin_s, until_switch_s))

    def restarted(self) -> None:
        """A contact sensor keeps nothing worth resetting."""

    @property
    def resets(self) -> int:
        return 0


def make_model(kind: DeviceKind, rng: random.Random, start_us: int, meter_resets_per_day: float) -> Model:
    """The behaviour of `kind`, seeded from the device's own generator."""
    if kind is CLIMATE:
        return ClimateModel(rng, kind, start_us, outdoor=False)
    if kind is OUTDOOR:
        return ClimateModel(rng, kind, start_us, outdoor=True)
    if kind is PLUG:
        return PlugModel(rng, kind, start_us)
    if kind is METER:
        return MeterModel(rng, kind, start_us, meter_resets_per_day)
    if kind is DOOR:
        return DoorModel(rng, kind, start_us)
    raise ValueError(f"no model for device kind {kind.name!r}")
