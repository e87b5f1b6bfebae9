"""A batch whose answer httpx cannot read is bisected once it repeats while InfluxDB answers /ping, and is
retried for as long as /ping does not answer (an outage never drops a line).

The peer is a tiny real HTTP server (a misbehaving peer, not a model of InfluxDB): it answers a batch
holding the poisoned line as InfluxDB can when it echoes a refused line in `X-Influxdb-Error`, with a
byte HTTP does not allow in a header, which httpx refuses (`RemoteProtocolError`); other batches get 204.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from ingest_worker.store.influx import PROTOCOL_REPEATS, InfluxWriter, LineError
from tests.conftest import wait_for

POISON = "poison"
MALFORMED = (b"HTTP/1.1 400 Bad Request\r\nX-Influxdb-Error: unable to parse 'bad\x00line'\r\n"
             b"Content-Length: 0\r\n\r\n")
NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


@dataclass
class Peer:
    ping_up: bool
    written: list[str] = field(default_factory=list)
    malformed: int = 0
    url: str = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode("latin-1").split("\r\n")
                length = next((int(h.split(":", 1)[1]) for h in lines if h.lower().startswith("content-length:")), 0)
                body = await reader.readexactly(length)
                if lines[0].startswith("GET /ping"):
                    writer.write(NO_CONTENT if self.ping_up else MALFORMED)
                else:
                    batch = gzip.decompress(body).decode().split("\n")
                    if any(POISON in line for line in batch):
                        self.malformed += 1
                        writer.write(MALFORMED)
                    else:
                        self.written += batch
                        writer.write(NO_CONTENT)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def running(peer: Peer) -> AsyncIterator[Peer]:
    server = await asyncio.start_server(peer.serve, "127.0.0.1", 0)
    peer.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield peer
    finally:
        server.close()
        await server.wait_closed()


def lines() -> list[str]:
    return [f"m,entity_id=e{i} value={i} {i}" for i in range(20)]


def test_a_batch_that_always_gets_an_unreadable_answer_is_bisected_to_its_line() -> None:
    batch = lines()
    batch.insert(7, f"m,entity_id={POISON} value=1 7")

    async def scenario() -> tuple[Peer, list[LineError]]:
        async with running(Peer(ping_up=True)) as peer:
            writer = InfluxWriter(peer.url, "db", "user", "password", 5.0)
            try:
                return peer, await writer.write(batch, retry=True)
            finally:
                await writer.aclose()

    peer, errors = asyncio.run(scenario())
    assert [e.line for e in errors] == [batch[7]]
    assert "could not be read 3 times in a row while it answered /ping (RemoteProtocolError" in errors[0].error
    assert sorted(peer.written) == sorted(line for line in batch if POISON not in line)  # every other line landed
    assert peer.malformed % PROTOCOL_REPEATS == 0


def test_unreadable_answers_while_ping_does_not_answer_are_retried_not_dropped() -> None:
    batch = [f"m,entity_id={POISON} value=1 1", *lines()]

    async def scenario() -> Peer:
        async with running(Peer(ping_up=False)) as peer:
            writer = InfluxWriter(peer.url, "db", "user", "password", 5.0)
            task = asyncio.create_task(writer.write(batch, retry=True))
            try:
                await asyncio.to_thread(wait_for, lambda: peer.malformed >= 2 * PROTOCOL_REPEATS or task.done(),
                                        "the write to be retried past the repeat limit", 60.0)
                assert not task.done()  # still retrying: nothing bisected, nothing dead-lettered
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await writer.aclose()
            async with httpx.AsyncClient(base_url=peer.url) as client:
                with pytest.raises(httpx.RemoteProtocolError):  # the peer misbehaves as the test says
                    await client.get("/ping")
            return peer

    peer = asyncio.run(scenario())
    assert peer.written == []
