"""What tracing costs the worker: ingest throughput with traces off vs on, in one run, rounds alternating.

Method (as `ingest_throughput.py`'s worker run): for each run N eventstream messages are preloaded into a
fresh persistent MQTT session while the worker is offline; the worker then drains them, timed from its MQTT
connection to the last point being queryable in InfluxDB. "off" is the worker as shipped (no OTLP
endpoint: no OpenTelemetry module imported); "on" exports its rounds of batches (a span each, an event per
batch) over OTLP/HTTP to a live receiver in this process (tests/otlp_receiver.py), which must end up holding
every message's batch.
Rounds alternate off/on and on/off so drift on a shared machine hits both. Besides wall-clock msg/s, the
worker's own CPU time per message (user + system from /proc, start-up excluded) is compared: other
processes on the machine stretch wall time, much less the worker's CPU seconds.

Part 2 (CPU only, in the bench's process, before part 1): a batch's parse with tracing off and on, each batch
through both adjacently, and a batch's whole tracing cost (its record, its event in a round's span, the
round's end, the export thread encoding and posting it to a receiver in a process of its own) against that
parse: on a machine too busy for part 1's wall clock to resolve 3 %, this is the figure that does.

Part 3 (first): a registry-mode worker serving many quiet homes (`many_tenants_ingest.py`'s method and homes,
`--registry-*`), traces off and on, rounds alternating over the same homes: each home flushes a few messages
every couple of seconds, hundreds of flushes a second, where a per-batch cost weighs most. The worker's CPU per
message and the delivered msg/s, every point checked in InfluxDB and every message's batch at the receiver.

Usage: .venv/bin/python bench/tracing_overhead.py [--messages N] [--rounds R] [--registry-homes H] (--rounds 0:
parts 2 and 3 only; --registry-homes 0: no part 3; --skip-part2)
Target: tracing costs ≤ 3 % of ingest throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest_throughput import Bench  # noqa: E402
from tests.otlp_receiver import OtlpReceiver  # noqa: E402

TARGET_COST = 0.03
SPANS = 3_000  # part 2: batches traced for the per-batch figure
CONNECTED = "ingest_worker.mqtt_link: connected to"
# How often InfluxDB is asked whether every point is in: a count over the run's points costs InfluxDB CPU the
# worker's writes need, so not too often; the same for both modes.
POLL_S = 0.1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def connected(log: Path) -> float | None:
    """When the worker's MQTT connection came up (its log's "connected to" line), as epoch seconds."""
    for line in log.read_text(errors="replace").splitlines():
        if CONNECTED in line:
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time, as logging writes
    return None


def one_run(bench: Bench, name: str, extra: dict[str, str]) -> tuple[float, float]:
    """Drain N preloaded messages with one worker: (msg/s, worker CPU µs per message).

    Timed from the worker's MQTT connection (the broker starts delivering the session's queue at once: the
    subscription is confirmed only after much of it is drained) to the last point being queryable; its CPU
    from the moment the bench sees that connection (start-up, imports included, excluded)."""
    topic, client_id = f"bench/{bench.run_id}/{name}", f"bench-{bench.run_id}-{name}"
    bench.subscribe_offline(client_id, topic)
    bench.preload([topic], datetime.now(UTC) - timedelta(hours=1))
    tenant = bench.tenant(name.replace("-", ""))
    log = ROOT / ".hats" / f"bench-worker-{tenant}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ingest_worker"], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env={**bench.worker_env(tenant, client_id, topic), **extra})
    deadline = time.monotonic() + 120
    while (started := connected(log)) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not connect: {log.read_text()[-2000:]}")
        time.sleep(0.005)
    cpu_at_start = cpu_s(proc.pid)
    while bench.count_points(tenant) < bench.messages:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited: {log.read_text()[-2000:]}")
        time.sleep(POLL_S)
    elapsed = time.time() - started
    cpu = cpu_s(proc.pid) - cpu_at_start
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    if bench.count_points(tenant) != bench.messages:
        raise RuntimeError(f"{name}: published != written")
    return bench.messages / elapsed, cpu / bench.messages * 1e6


def span_cpu(batches: int, batch_messages: int, repeats: int) -> dict[str, float]:
    """Part 2, CPU only, in this process: a batch's parse (`Pipeline.process`, the CPU-bound part of a batch)
    with tracing off and on, interleaved, and the whole of a batch's tracing — its record, its event in a
    round's span, and the export thread encoding and posting it to a receiver in a process of its own.
    `process_time` counts every thread of this process, the exporter's included, and no other process."""
    from bench.pipeline_cpu import eventstream
    from ingest_worker.pipeline import Pipeline
    from ingest_worker.sources.eventstream import EventstreamSource
    from ingest_worker.store.metadata import MetadataStore
    from ingest_worker.tracing.otlp import OtlpBatchTracer

    receiver = subprocess.Popen([sys.executable, "-m", "tests.otlp_receiver"], cwd=ROOT, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None
    assert receiver.stdin is not None
    tracer = OtlpBatchTracer(receiver.stdout.readline().strip(), "hats-bench")
    items = eventstream(batches * batch_messages)
    chunks = [items[i:i + batch_messages] for i in range(0, len(items), batch_messages)]
    parse = {"off": 0.0, "on": 0.0}
    for repeat in range(repeats):
        pipelines = {mode: Pipeline("bench", [EventstreamSource("homeassistant/events")], None,  # type: ignore[arg-type]
                                    MetadataStore("bench", 100_000), None, "", None, 262_144, 10**9, 60.0)
                     for mode in parse}
        pipelines["off"]._tracer = None  # the branch `tracing.batch_tracer()` decides, either way
        pipelines["on"]._tracer = tracer
        for index, chunk in enumerate(chunks):  # each batch through both, adjacent, in alternating order
            for mode in ("off", "on") if (index + repeat) % 2 == 0 else ("on", "off"):
                started = time.process_time()
                pipelines[mode].process(chunk)
                pipelines[mode].discard()
                parse[mode] += time.process_time() - started
    spans = SPANS  # enough batches for a steady figure, whatever the parse's batch count
    started = time.process_time()
    for _ in range(spans):
        span = tracer.batch("bench", time.time_ns(), batch_messages, 1_000_000)
        span.durable(True, batch_messages, 0)
        span.committed(0)
        span.acknowledged()
    tracer.flush(60)
    span_s = (time.process_time() - started) / spans
    receiver.stdin.close()
    rounds, events = (int(n) for n in receiver.stdout.readline().split())
    receiver.wait(30)
    if events != spans:
        raise RuntimeError(f"the receiver got {events} of {spans} batches (in {rounds} span(s))")
    off, on = parse["off"] / (len(chunks) * repeats), parse["on"] / (len(chunks) * repeats)
    # The traced parse differs from the plain one by two clock reads per hand-off batch: what `parse_on_vs_off`
    # shows beyond that is this machine's noise. The span's own cost is measured apart, against the parse.
    return {"parse_off_ms_per_batch": off * 1e3, "parse_on_ms_per_batch": on * 1e3, "parse_on_vs_off": on / off,
            "span_us_per_batch": span_s * 1e6, "span_cost_pct_of_parse": 100 * span_s / off}


def traced_messages(receiver: OtlpReceiver) -> int:
    """Messages the receiver holds batch spans for."""
    from ingest_worker.tracing.otlp import ROUND_SPAN

    return sum(int(s.attributes.get("hats.messages", 0)) for s in receiver.received(ROUND_SPAN))


def registry(homes: int, entities: int, rate: float, seconds: float, rounds: int,
             batch_age: float) -> dict[str, object]:
    """Part 3: one registry-mode worker serving `homes` quiet homes (`bench/many_tenants_ingest.py`'s method:
    `rate` msg/s round-robin over homes × entities for `seconds`, every point checked in InfluxDB), traces off
    and on, rounds alternating over the same homes: the homes' messages interleaved, so each home flushes a
    few messages every `batch_age` s, the case where a per-batch cost weighs most."""
    from bench.many_tenants_ingest import SHARDS
    from bench.many_tenants_ingest import Bench as ManyBench

    bench = ManyBench("test")
    shard = int.from_bytes(os.urandom(1), "big") % SHARDS
    receiver = OtlpReceiver()
    on_env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint}
    runs: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    try:
        names = bench.homes(homes, shard, "t", entities)
        for round_ in range(rounds):
            for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                before = traced_messages(receiver)
                result = bench.run(names, shard, entities, rate, seconds, batch_age,
                                   on_env if mode == "on" else None, f"{mode}{round_}", interleave=True)
                runs[mode].append((result.delivered_msg_s, result.cpu_s_per_1000 * 1e3))
                print(f"registry round {round_ + 1} {mode:>3}: {result.delivered_msg_s:,.0f} msg/s delivered, "
                      f"worker CPU {result.cpu_s_per_1000 * 1e3:.1f} µs/msg", file=sys.stderr)
                if mode == "on":
                    traced = traced_messages(receiver) - before
                    if traced != result.messages:
                        raise RuntimeError(f"the receiver holds batch spans for {traced} of {result.messages} "
                                           "messages")
    finally:
        bench.cleanup()
        receiver.close()
    rate_on = statistics.median(r for r, _ in runs["on"])
    rate_off = statistics.median(r for r, _ in runs["off"])
    cpu_on = statistics.median(c for _, c in runs["on"])
    cpu_off = statistics.median(c for _, c in runs["off"])
    from ingest_worker.tracing.otlp import ROUND_SPAN

    rounds_received = receiver.received(ROUND_SPAN)
    spans = len(rounds_received)
    batches = sum(int(s.attributes.get("hats.batches", 0)) for s in rounds_received)
    messages = sum(int(s.attributes.get("hats.messages", 0)) for s in rounds_received)
    return {
        "registry_homes": homes, "registry_entities_per_home": entities, "registry_offered_msg_s": rate,
        "registry_seconds": seconds, "registry_batch_max_age_s": batch_age, "registry_rounds": rounds,
        "registry_off_msg_s": [round(r) for r, _ in runs["off"]],
        "registry_on_msg_s": [round(r) for r, _ in runs["on"]],
        "registry_delivered_on_vs_off": round(rate_on / rate_off, 3),
        "registry_off_cpu_us_per_msg": [round(c, 1) for _, c in runs["off"]],
        "registry_on_cpu_us_per_msg": [round(c, 1) for _, c in runs["on"]],
        "registry_cpu_cost_pct": round(100 * (cpu_on / cpu_off - 1), 1),
        "registry_spans_received": spans,
        "registry_batches_traced": batches,
        "registry_messages_per_batch": round(messages / batches, 1) if batches else None,
        "registry_cpu_us_per_batch_off": round(cpu_off * messages / batches) if batches else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-messages", type=int, default=5_000, help="part 2: messages per batch "
                        "(HATS_BATCH_MAX_POINTS, the batch size under load)")
    parser.add_argument("--registry-homes", type=int, default=500, help="part 3: homes of the registry-mode worker "
                        "(0: skip part 3; InfluxDB holds ~26 open files per home)")
    parser.add_argument("--registry-entities", type=int, default=20, help="part 3: entities per home")
    parser.add_argument("--registry-rate", type=float, default=1_000, help="part 3: offered msg/s (a 10 s cadence "
                        "of every entity at the defaults)")
    parser.add_argument("--registry-seconds", type=float, default=30)
    parser.add_argument("--registry-rounds", type=int, default=3)
    parser.add_argument("--registry-batch-age", type=float, default=2.0, help="part 3: HATS_BATCH_MAX_AGE_S (as "
                        "many_tenants_ingest.py: each home flushes ~4 messages every 2 s)")
    parser.add_argument("--skip-part2", action="store_true")
    args = parser.parse_args()
    for key in [k for k in os.environ if k.startswith("OTEL_")]:
        del os.environ[key]  # "off" is the worker with no endpoint at all
    out: dict[str, object] = {}
    if args.registry_homes and args.registry_rounds:
        part3 = registry(args.registry_homes, args.registry_entities, args.registry_rate, args.registry_seconds,
                         args.registry_rounds, args.registry_batch_age)
        print(json.dumps(part3), file=sys.stderr)
        out.update(part3)
    if args.skip_part2:
        print(json.dumps(out, indent=2))
        return
    part2 = span_cpu(20, args.batch_messages, 4)
    print(f"part 2: parse {part2['parse_off_ms_per_batch']:.1f} ms/batch off, {part2['parse_on_ms_per_batch']:.1f} "
          f"on; span {part2['span_us_per_batch']:.0f} µs/batch = {part2['span_cost_pct_of_parse']:.2f} % of the parse",
          file=sys.stderr)
    out.update({f"part2_{key}": round(value, 3) for key, value in part2.items()})
    if args.rounds:
        out.update(end_to_end(args.messages, args.rounds))
        out["met"] = out["throughput_cost_pct"] <= 100 * TARGET_COST  # type: ignore[operator]
    out["target_cost_pct"] = 100 * TARGET_COST
    print(json.dumps(out, indent=2))


def end_to_end(messages: int, rounds: int) -> dict[str, object]:
    """Part 1: the worker draining preloaded sessions, traces off and on, rounds alternating."""
    bench = Bench(messages)
    receiver = OtlpReceiver()
    on_env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint}
    runs: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    for round_ in range(rounds):
        order = ("off", "on") if round_ % 2 == 0 else ("on", "off")
        for mode in order:
            before = traced_messages(receiver)
            msg_s, cpu_us = one_run(bench, f"{mode}-{round_}", on_env if mode == "on" else {})
            runs[mode].append((msg_s, cpu_us))
            print(f"round {round_ + 1} {mode:>3}: {msg_s:,.0f} msg/s, worker CPU {cpu_us:.1f} µs/msg", file=sys.stderr)
            if mode == "on":
                traced = traced_messages(receiver) - before
                if traced != messages:
                    raise RuntimeError(f"the receiver holds batch spans for {traced} of {messages} messages")
    receiver.close()
    rate = {mode: statistics.median(r for r, _ in runs[mode]) for mode in runs}
    cpu = {mode: statistics.median(c for _, c in runs[mode]) for mode in runs}
    from ingest_worker.tracing.otlp import ROUND_SPAN

    spans = receiver.received(ROUND_SPAN)
    return {
        "messages_per_run": messages,
        "rounds": rounds,
        "off_msg_s": [round(r) for r, _ in runs["off"]],
        "on_msg_s": [round(r) for r, _ in runs["on"]],
        "throughput_on_vs_off": round(rate["on"] / rate["off"], 3),
        "throughput_cost_pct": round(100 * (1 - rate["on"] / rate["off"]), 1),
        "off_cpu_us_per_msg": [round(c, 1) for _, c in runs["off"]],
        "on_cpu_us_per_msg": [round(c, 1) for _, c in runs["on"]],
        "cpu_cost_pct": round(100 * (cpu["on"] / cpu["off"] - 1), 1),
        "batch_spans_received": len(spans),
        "messages_per_span": round(messages * rounds / len(spans)) if spans else None,
    }

if __name__ == "__main__":
    main()
