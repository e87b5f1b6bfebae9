"""What the InfluxDB write gate costs the worker's hot path: the worker's own writer (`InfluxWriter`, gzip
batches of 5,000 points, one keep-alive client) writing to InfluxDB directly with InfluxDB's WRITE account
(what the worker did before: the baseline; on the local stack InfluxDB's own HTTP is its unix socket, which is
also what the gate forwards to) and through the gate (`hats up` runs it) with the gate's credential, in one
run, alternating rounds so both see the same machine.

Prints points/s and the per-batch p50/p99 of each, and the ratio (gate / direct). Both write to one bench
database, raw policy, the same lines shifted in time (InfluxDB does the same work either way).

Usage: .venv/bin/python bench/influx_gate.py [--batches 200] [--points 5000] [--concurrency 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack import influxdb, stack  # noqa: E402
from devstack.profile import load_profile  # noqa: E402
from ingest_worker.contract import database_for  # noqa: E402
from ingest_worker.store.influx import InfluxWriter, encode_body  # noqa: E402

TENANT = "bench_gate"
TIMEOUT_S = 60.0


def batches(count: int, points: int, offset_ns: int) -> list[tuple[list[str], bytes]]:
    start = time.time_ns() - 3_600 * 1_000_000_000 + offset_ns
    made = []
    for b in range(count):
        lines = [f"temperature,entity_id=sensor.e{(b * points + i) % 1000},domain=sensor value={i % 400 / 10} "
                 f"{start + (b * points + i) * 1000}" for i in range(points)]
        made.append((lines, encode_body(lines)))
    return made


async def run(writer: InfluxWriter, work: list[tuple[list[str], bytes]], concurrency: int) -> tuple[float, list[float]]:
    queue: asyncio.Queue[tuple[list[str], bytes]] = asyncio.Queue()
    for item in work:
        queue.put_nowait(item)
    latencies: list[float] = []

    async def one() -> None:
        while not queue.empty():
            lines, body = queue.get_nowait()
            started = time.perf_counter()
            rejected = await writer.write(lines, retry=False, body=body)
            latencies.append(time.perf_counter() - started)
            if rejected:
                raise RuntimeError(f"InfluxDB rejected {len(rejected)} lines: {rejected[0].error}")

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(one())
    return time.perf_counter() - started, latencies


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--points", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", default="test")
    args = parser.parse_args()
    profile = load_profile(args.profile)
    env = stack.up(profile)
    secrets = stack.secrets_for(profile)
    database = database_for(TENANT)
    influxdb.query(profile, f'DROP DATABASE "{database}"', influxdb.ADMIN_USER, secrets["influx_admin"])
    influxdb.ensure_tenant_database(profile, secrets, database, 30, 730)
    socket = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(influxdb.socket_path(profile))),
                               base_url="http://localhost", auth=(influxdb.WRITER_USER, secrets["influx_writer"]),
                               timeout=TIMEOUT_S)
    direct = InfluxWriter("http://localhost", database, influxdb.WRITER_USER, secrets["influx_writer"], TIMEOUT_S,
                          client=socket)
    gated = InfluxWriter(env["HATS_INFLUX_WRITE_URL"], database, env["HATS_INFLUX_USERNAME"],
                         env["HATS_INFLUX_PASSWORD"], TIMEOUT_S)
    results: dict[str, tuple[float, list[float]]] = {"direct": (0.0, []), "gate": (0.0, [])}
    try:
        for writer in (direct, gated):  # warm both connections and InfluxDB
            await run(writer, batches(4, args.points, 0), args.concurrency)
        for round_ in range(args.rounds):
            for name, writer in (("direct", direct), ("gate", gated)):
                # Distinct timestamps per round and path: every write is new points, as in production.
                offset = (round_ * 2 + (name == "gate") + 1) * args.batches * args.points * 1000
                work = batches(args.batches, args.points, offset)
                seconds, latencies = await run(writer, work, args.concurrency)
                total, all_latencies = results[name]
                results[name] = (total + seconds, all_latencies + latencies)
    finally:
        await socket.aclose()
        await gated.aclose()
        influxdb.query(profile, f'DROP DATABASE "{database}"', influxdb.ADMIN_USER, secrets["influx_admin"])
    points = args.rounds * args.batches * args.points
    print(f"{points:,} points per path in batches of {args.points:,}, {args.concurrency} concurrent writes, "
          f"{args.rounds} alternating rounds")
    rates = {}
    for name, (seconds, latencies) in results.items():
        rates[name] = points / seconds
        print(f"  {name:>6}: {rates[name]:>10,.0f} points/s   batch p50 {pct(latencies, 50):6.1f} ms   "
              f"p99 {pct(latencies, 99):6.1f} ms")
    print(f"  ratio gate/direct throughput: {rates['gate'] / rates['direct']:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
