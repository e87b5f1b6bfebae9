"""`python -m ha_simulator`: publish a simulated Home Assistant fleet (settings from the environment)."""

from __future__ import annotations

import argparse
import os
import sys

from ha_simulator.publish import Target, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ha_simulator", description=__doc__)
    parser.add_argument("--devices", type=int, default=50, help="fleet size (1-10000)")
    parser.add_argument("--seed", type=int, default=42, help="same seed, same fleet and values")
    parser.add_argument("--backfill-hours", type=float, default=0.0, help="history to publish first")
    parser.add_argument("--duration", type=float, default=None, help="seconds of live traffic (default: forever)")
    parser.add_argument("--topic", default=os.environ.get("HATS_EVENTSTREAM_TOPIC", "homeassistant/events"))
    args = parser.parse_args(argv)
    if not 1 <= args.devices <= 10_000:
        parser.error("--devices must be 1-10000")
    missing = [name for name in ("HATS_MQTT_PORT", "HATS_MQTT_PUBLISHER_USERNAME", "HATS_MQTT_PUBLISHER_PASSWORD")
               if not os.environ.get(name)]
    if missing:
        print(f"ha_simulator: {', '.join(missing)} not set; source the stack's env (`. .hats/env`)", file=sys.stderr)
        return 2
    target = Target(os.environ.get("HATS_MQTT_HOST", "127.0.0.1"), int(os.environ["HATS_MQTT_PORT"]),
                    os.environ["HATS_MQTT_PUBLISHER_USERNAME"], os.environ["HATS_MQTT_PUBLISHER_PASSWORD"], args.topic)
    try:
        run(target, args.devices, args.seed, args.backfill_hours, args.duration)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
