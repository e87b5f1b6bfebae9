"""mqtt_statestream: one topic per entity and field, so a state and its meaning arrive separately.

Home Assistant publishes, for each state change, `<base>/<domain>/<object_id>/state` (the raw state,
JSON-quoted by some versions), then with `publish_timestamps` `.../last_updated` and `.../last_changed`,
then every attribute on `.../<attribute>` as JSON. The unit, device_class and state_class that give a
number its meaning therefore come *after* the state, and on a resubscribe the broker replays retained
topics in its own order. Hence:

* Attributes live in a per-entity cache that outlives flushes (HA republishes them with every state,
  so a cache miss heals on the next change). A `/state` message is held as pending, not emitted.
* `flush()` (called by the pipeline on every tick) emits the pending states that are *complete*, in
  arrival order. Complete means: the entity's burst is over — nothing arrived for it for `QUIET_S` —,
  some attribute of it is known and, for an entity seen publishing timestamps, its `last_updated` has
  arrived; or it has waited `HOLD_S`, or `UNDESCRIBED_HOLD_S` while nothing describes it. Releasing a state as
  soon as *any* attribute was cached described it before its unit and device_class arrived: 9 of 11
  numeric entities of a real HA 2024.3 capture had their first state in measurement `state`, and a unit
  change would convert the first new state with the old unit.
* A state that nothing describes (no attribute of its entity cached, none of its own) waits past
  `HOLD_S` while statestream messages keep arriving and none of them has been an attribute yet, or
  attributes (of any entity: a retained replay) are still arriving; `UNDESCRIBED_HOLD_S` at most. Its
  quantity is unknown, and a guess would be wrong for good.
  The soak found it after a worker SIGKILL: the restarted process has an empty cache, the broker sends
  the session's backlog first and the retained attributes only after it (on the re-subscription), so a
  first state released after `HOLD_S` landed in measurement `state` and the entity's next states, once
  its attributes had arrived, in `battery`: two series for one entity. An entity whose state waited
  that long without one attribute is taken to publish none (HA's `publish_attributes` off): it is
  marked bare, and its later states wait only as described ones do. A state released undescribed is
  described by what `core.entities` knows of its entity (`MetadataStore.described`), and so are the gaps
  of one described by part of its attributes only: the replay can stall mid-entity (the broker's window
  full of held states), and a battery whose cache held its `state_class` alone landed in measurement
  `state` (soak run F: 455 entities in two series, the same point in both).
  An entity the home already has in `core.entities` (`known`) is described by that at once: its state
  does not wait for the replay. Held, it was the restarted worker's longest wait, and the broker's cost:
  Mosquitto 2.0.11 finds a PUBACK's message by walking its in-flight list from the oldest, so every
  acknowledgement sent past the held states walked them (soak run I: 7,028 held states with their
  timestamps among the 19,038 messages ahead of each PUBACK; the broker at 89 % CPU in that walk and
  the publishers throttled from 3,500 to 250 msg/s).
  Completeness never depends on where the
  network happened to cut a read, which is what a flush per hand-off batch did (8–37 % of states lost
  their timestamp in an integration test).
* Bursts of one entity interleave: HA publishes each state change from its own task, so two changes
  milliseconds apart arrive as `state₁ state₂ last_updated₁ last_updated₂ unit₁ unit₂ …` (seen with a
  real HA 2024.3 for a value change followed by a unit change). So a `last_updated`, and each attribute,
  belongs to the entity's oldest pending state that has not received one yet (first in, first out, as HA
  publishes every attribute with every change), and a state is emitted with its own attributes over the
  cached ones. One replayed `last_updated` that arrives with no pending state (the broker replays retained
  topics in its own order) waits up to `HOLD_S` for the next replayed state of that entity, never longer:
  stamping a later state with an earlier change's time would make InfluxDB overwrite that earlier point.
  A live one with no pending state is ignored (`last_updated_without_state`): live, it always follows its
  state, so that state is gone (emitted, or acknowledged by an earlier process that the broker redelivers
  this one from). A state without one gets receipt time.
* A message from the broker's retained store (`retained`: the replay on every re-subscription) is a copy
  of the topic's latest message, which the persistent session delivered live already. A replayed state is
  paired only with a replayed `last_updated` (and replayed attributes own replayed states only), and it is
  emitted only with its own `last_updated` and something describing it: then it is the same point as the
  live one and InfluxDB overwrites it. Otherwise it is dropped (`replays_dropped`, logged), never stored at
  receipt time or under `state`: the soak found 531 entities with such a copy after a restart, a second
  point and a second series each. Replayed messages are acknowledged at once (the broker keeps them).
  A worker's first start on a new session records the home's current states this way too.
* `last_changed` is accepted and ignored (the contract stamps points with last_updated).
* Each emitted state carries its `/state` message as `origin`, so a later rejection dead-letters the
  message that was really received. While a state is held, its `/state` message and the timestamp and
  attributes of its own burst name it in `Outcome.held_by`: the pipeline acknowledges them only once the
  state is durable (a PUBACK sent with the batch the message was parsed in lost every held state on a
  SIGKILL, −238 points per entity over 5 kills). Every held state is emitted within `HOLD_S`
  (`UNDESCRIBED_HOLD_S` while undescribed), which bounds how long the broker's in-flight window holds them.

Memory is bounded against a hostile publisher: attributes per entity (`MAX_ATTRIBUTES_PER_ENTITY`,
the four that give meaning always admitted), bytes per attribute (`MAX_ATTRIBUTE_VALUE_BYTES`, larger
values are not cached and not rejected), cached entities and cached bytes overall (least recently
touched entity evicted first) and pending states (`MAX_PENDING_STATES`; past it the oldest pending state
is emitted early through `handle()`'s Outcome rather than dropped).
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ingest_worker.normalise import ENTITY_ID, MAX_STATE_CHARS, EntityState, parse_time_ns
from ingest_worker.rejections import Reason, Rejected
from ingest_worker.sources.base import JSON_ERRORS, Outcome, parse_json

log = logging.getLogger(__name__)

SOURCE = "statestream"
STATE_LEAF = "state"
LAST_UPDATED_LEAF = "last_updated"
LAST_CHANGED_LEAF = "last_changed"
LOOSE_LAST_UPDATED = "last_updated_without_state"  # a live timestamp no pending state of its entity waits for
# Real entities carry 5–30 attributes; the bound caps what one topic family can pin in memory.
MAX_ATTRIBUTES_PER_ENTITY = 100
# Units and classes are a few bytes; long lists (forecasts, source lists) are not what a point needs.
MAX_ATTRIBUTE_VALUE_BYTES = 4 * 1024
# Admitted even when an entity is at MAX_ATTRIBUTES_PER_ENTITY: they decide measurement and unit.
MEANINGFUL_ATTRIBUTES = frozenset({"unit_of_measurement", "device_class", "state_class", "friendly_name"})
# A large home has a few thousand entities; beyond this the least recently touched entity is evicted.
MAX_CACHED_ENTITIES = 100_000
# Payload bytes (attribute name + JSON text) cached over all entities; Python's own overhead comes on top.
MAX_CACHE_BYTES = 64 * 1024 * 1024
# States held until complete; far above what HOLD_S of a large home's traffic leaves pending.
MAX_PENDING_STATES = 10_000
# How long a state waits for its timestamp and attributes: HA publishes them within milliseconds, a
# retained replay within a second; the cost is latency for incomplete states only.
HOLD_S = 1.0
# How long at most a state that nothing describes waits for its entity's first attribute: after a
# restart the broker replays the retained attributes only once it has sent the session's backlog, and a
# large home's replay takes the worker seconds. Past it the entity is taken to publish no attributes.
# It waits only HOLD_S once no statestream message came for HOLD_S (no backlog, no replay under way) or
# attributes that were flowing stopped for HOLD_S (the replay is over). The cost: in a busy home that
# publishes no attributes, the first state of each entity, per worker process, lands this late.
UNDESCRIBED_HOLD_S = 30.0
# A burst is over when its entity has been silent this long (measured when messages are processed, so a
# backlog read in one go is not mistaken for silence). HA publishes one burst in a few milliseconds; the
# pipeline's tick is 50 ms. Every statestream state waits this long: its latency, never its correctness.
QUIET_S = 0.2


@dataclass(slots=True)
class _Pending:
    entity_id: str
    state: str
    held_at: float
    origin: tuple[str, bytes, int]
    touched_at: float  # the last message of its entity (state, timestamp or attribute) was processed then
    last_updated: str | None = None
    own: dict[str, object] = field(default_factory=dict)  # the attributes of its own burst
    replay: bool = False  # from the broker's retained store: emitted only with its own last_updated, described


@dataclass(slots=True)
class _Attributes:
    values: dict[str, object] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    size: int = 0
    stamps: bool = False  # this entity publishes last_updated: wait for it
    bare: bool = False  # a state of it waited UNDESCRIBED_HOLD_S for an attribute in vain: it publishes none


def _unknown(entity_id: str) -> bool:
    return False


class StatestreamSource:
    """Home Assistant's mqtt_statestream under `base_topic` (which may itself contain slashes)."""

    name = SOURCE

    def __init__(self, base_topic: str, *, max_cached_entities: int = MAX_CACHED_ENTITIES,
                 max_cache_bytes: int = MAX_CACHE_BYTES, max_pending_states: int = MAX_PENDING_STATES,
                 hold_s: float = HOLD_S, undescribed_hold_s: float = UNDESCRIBED_HOLD_S,
                 quiet_s: float = QUIET_S, clock: Callable[[], float] = time.monotonic,
                 known: Callable[[str], bool] | None = None) -> None:
        base = base_topic.rstrip("/")  # HA appends the slash itself when base_topic lacks one
        if not base or "+" in base or "#" in base:
            raise ValueError(f"statestream base_topic {base_topic!r} must be a non-empty topic without wildcards")
        self._base = base
        self._max_cached_entities = max_cached_entities
        self._max_cache_bytes = max_cache_bytes
        self._max_pending_states = max_pending_states
        self._hold_s = hold_s
        self._undescribed_hold_s = max(hold_s, undescribed_hold_s)
        self._quiet_s = quiet_s
        self._clock = clock
        # Whether the home's metadata describes an entity (`MetadataStore.knows`; the pipeline's wiring sets it).
        self.known: Callable[[str], bool] = known or _unknown
        self._cache: OrderedDict[str, _Attributes] = OrderedDict()
        self._cache_bytes = 0
        self._pending: deque[_Pending] = deque()
        self._open: dict[str, list[_Pending]] = {}  # per entity, its pending states in arrival order
        self._loose_last_updated: dict[str, tuple[str, float]] = {}  # replayed timestamps, by entity
        self.replays_dropped = 0  # replayed states without their own last_updated or meaning (not stored)
        self._attribute_at: float | None = None  # when an attribute (of any entity) was last cached
        self._handled_at = clock()  # when the latest message (of any entity) was handled

    def filters(self) -> tuple[str, ...]:
        return (f"{self._base}/+/+/+",)

    def matches(self, topic: str) -> bool:
        start = len(self._base) + 1
        return topic.startswith(self._base + "/") and topic.count("/", start) == 2

    def handle(self, topic: str, payload: bytes, received_ns: int | None = None, retained: bool = False) -> Outcome:
        self._handled_at = self._clock()
        entity_id, leaf = self._split(topic)
        if leaf == STATE_LEAF:
            return self._hold(entity_id, _state_text(_decode(payload)), (topic, payload, received_ns or time.time_ns()),
                              retained)
        if leaf == LAST_UPDATED_LEAF:
            return self._last_updated(entity_id, _unquote(_decode(payload)), retained)
        if leaf == LAST_CHANGED_LEAF:
            return Outcome(ignored="last_changed")
        return self._attribute(entity_id, leaf, payload, retained)

    def flush(self, force: bool = False) -> tuple[EntityState, ...]:
        """The complete pending states (all of them with `force`, e.g. at shutdown), in arrival order."""
        if not self._pending and not self._loose_last_updated:
            return ()
        now = self._clock()
        ready: list[_Pending] = []
        waiting: deque[_Pending] = deque()
        # Held in arrival order, and none is complete before it was held QUIET_S: the scan stops at the
        # first state younger than that, so a tick costs the old states only, not every pending one.
        while self._pending and (force or now - self._pending[0].held_at >= self._quiet_s):
            pending = self._pending.popleft()
            if force or self._complete(pending, now):
                self._close(pending)
                if self._replay_lacks_meaning(pending):
                    continue
                ready.append(pending)
                if not force and not pending.replay and not self._described(pending):
                    self._mark_bare(pending.entity_id)
            else:
                waiting.append(pending)
        waiting.extend(self._pending)
        self._pending = waiting
        for key, (_, at) in list(self._loose_last_updated.items()):
            if force or now - at >= self._hold_s:
                del self._loose_last_updated[key]
        return tuple(self._emit(pending) for pending in ready)

    def _replay_lacks_meaning(self, pending: _Pending) -> bool:
        """A replayed state that is not the same point as the live one it copies (its own last_updated, its
        entity described): dropped, never stored at receipt time or under `state` (a second series)."""
        if not pending.replay or (pending.last_updated is not None and self._described(pending)):
            return False
        self.replays_dropped += 1
        log.info("retained %s of %s dropped: %s", STATE_LEAF, pending.entity_id,
                 "no last_updated came with it" if pending.last_updated is None else "nothing describes it")
        return True

    def _complete(self, pending: _Pending, now: float) -> bool:
        described = self._described(pending)
        held = now - pending.held_at
        if held >= self._undescribed_hold_s or (held >= self._hold_s and (described or self._settled(now))):
            return True
        if now - pending.touched_at < self._quiet_s:
            return False  # its burst (timestamps, then the attributes one by one) may still be arriving
        if not described:
            return False  # nothing describes it yet: its measurement is unknown
        cached = self._cache.get(pending.entity_id)
        if cached is None:
            # Described by the home's metadata alone (`known`): whether it publishes timestamps is not known
            # yet, so it waits HOLD_S for one (a real HA 2025.4 sent one 0.48 s after its state; released
            # at QUIET_S the state took receipt time, a second point beside eventstream's).
            return not self.known(pending.entity_id)
        return pending.last_updated is not None or not cached.stamps

    def _described(self, pending: _Pending) -> bool:
        """Some attribute describes it (its own or its entity's cached), its entity publishes none, or the
        home's metadata describes its entity (the pipeline fills the gaps from it: `MetadataStore.described`)."""
        if pending.own or self.known(pending.entity_id):
            return True
        cached = self._cache.get(pending.entity_id)
        return cached is not None and (bool(cached.values) or cached.bare)

    def _settled(self, now: float) -> bool:
        """No backlog or retained replay is under way: nothing came for HOLD_S, or attributes have been
        arriving and none came for HOLD_S."""
        if now - self._handled_at >= self._hold_s:
            return True
        return self._attribute_at is not None and now - self._attribute_at >= self._hold_s

    def _mark_bare(self, entity_id: str) -> None:
        cached = self._cache.get(entity_id)
        if cached is None:
            cached = self._cache[entity_id] = _Attributes()
            self._evict(keep=entity_id)
        cached.bare = True

    def _close(self, pending: _Pending) -> None:
        """`pending` leaves its entity's open states (it is emitted)."""
        states = self._open.get(pending.entity_id)
        if states is None:
            return
        states.remove(pending)
        if not states:
            del self._open[pending.entity_id]

    def _touch(self, entity_id: str) -> list[_Pending]:
        """The entity's open states, each marked as having heard from its entity now."""
        states = self._open.get(entity_id, [])
        if states:
            now = self._clock()
            for pending in states:
                pending.touched_at = now
        return states

    def take_rejections(self) -> list[Rejected]:
        return []  # a statestream message is one field of one entity: it fails whole, by raising

    def attributes(self, entity_id: str) -> dict[str, object]:
        """A copy of the cached attributes (empty when none are cached)."""
        cached = self._cache.get(entity_id)
        return dict(cached.values) if cached else {}

    @property
    def cached_entities(self) -> int:
        return len(self._cache)

    @property
    def cached_bytes(self) -> int:
        return self._cache_bytes

    # -- parts ----------------------------------------------------------------------------------

    def _split(self, topic: str) -> tuple[str, str]:
        if not self.matches(topic):
            raise Rejected(Reason.BAD_TOPIC, f"{_clip(topic)} is not {self._base}/<domain>/<object_id>/<field>")
        domain, object_id, leaf = topic[len(self._base) + 1:].split("/")
        entity_id = f"{domain}.{object_id}"
        if not ENTITY_ID.fullmatch(entity_id):
            raise Rejected(Reason.BAD_ENTITY_ID,
                           f"{_clip(domain + '/' + object_id)} is not <domain>/<object_id> of [a-z0-9_]")
        if not leaf:
            raise Rejected(Reason.BAD_TOPIC, f"{_clip(topic)} has an empty attribute name")
        return entity_id, leaf

    def _hold(self, entity_id: str, state: str, origin: tuple[str, bytes, int], replay: bool) -> Outcome:
        loose = self._loose_last_updated.pop(entity_id, None) if replay else None  # only a replay's is kept
        self._touch(entity_id)
        now = self._clock()
        pending = _Pending(entity_id, state, now, origin, now, loose[0] if loose else None, replay=replay)
        self._pending.append(pending)
        self._open.setdefault(entity_id, []).append(pending)
        if entity_id in self._cache:
            self._cache.move_to_end(entity_id)
        # A replay is acknowledged at once: the broker keeps it retained and replays it on the next subscription.
        held_by = None if replay else origin
        if len(self._pending) <= self._max_pending_states:
            return Outcome(held_by=held_by)  # held: flush() emits it
        oldest = self._pending.popleft()
        self._close(oldest)
        early = () if self._replay_lacks_meaning(oldest) else (self._emit(oldest),)
        return Outcome(states=early, held_by=None if oldest is pending else held_by)

    def _last_updated(self, entity_id: str, text: str, replay: bool) -> Outcome:
        parse_time_ns(text)  # a malformed timestamp is dead-lettered here, not on the state it would stamp
        cached = self._cache.get(entity_id)
        if cached is None:
            cached = self._cache[entity_id] = _Attributes()
            self._evict(keep=entity_id)
        cached.stamps = True
        # A replayed timestamp stamps the replayed state only, a live one live states only: one of a
        # replay given to a state of the backlog (or the reverse) would put two states on one instant.
        pending = next((p for p in self._touch(entity_id) if p.last_updated is None and p.replay is replay), None)
        if pending is not None:
            pending.last_updated = text
            return Outcome(ignored="last_updated", held_by=None if replay else pending.origin)
        if not replay:
            # A live one follows its state (HA publishes the state first, the broker keeps one publisher's
            # order): with none pending, its state was emitted already (its hold ran out) or acknowledged in
            # an earlier process, and this is a redelivery. Given to the entity's next state it would put
            # that state on this change's instant, overwriting its point, and shift every later one by one.
            return Outcome(ignored=LOOSE_LAST_UPDATED)
        # Loose (a retained replay put it first): acknowledged now, as a loss costs a later state its time only.
        self._loose_last_updated[entity_id] = (text, self._clock())
        return Outcome(ignored="last_updated")

    def _attribute(self, entity_id: str, name: str, payload: bytes, replay: bool) -> Outcome:
        states = self._touch(entity_id)
        cached = self._cache.get(entity_id)
        if len(payload) > MAX_ATTRIBUTE_VALUE_BYTES:
            if cached is not None and name in cached.values:  # a stale smaller value would be wrong now
                self._forget(cached, name)
            return Outcome(ignored="attribute_too_large")
        text = _decode(payload)
        value = parse_json(text, f"attribute {name[:64]!r} of {entity_id}")
        if cached is None:
            cached = self._cache[entity_id] = _Attributes()
        else:
            self._cache.move_to_end(entity_id)
        if (name not in cached.values and len(cached.values) >= MAX_ATTRIBUTES_PER_ENTITY
                and name not in MEANINGFUL_ATTRIBUTES):
            return Outcome(ignored="attribute_limit")
        if name in cached.values:
            self._forget(cached, name)
        size = len(name) + len(payload)
        cached.values[name] = value
        self._attribute_at = self._clock()
        owner = next((p for p in states if name not in p.own and p.replay is replay), None)
        if owner is not None:
            owner.own[name] = value  # bounded like the cache: only what the cache admitted
        cached.sizes[name] = size
        cached.size += size
        self._cache_bytes += size
        self._evict(keep=entity_id)
        return Outcome(ignored="attribute", held_by=owner.origin if owner is not None and not owner.replay else None)

    def _forget(self, cached: _Attributes, name: str) -> None:
        del cached.values[name]
        size = cached.sizes.pop(name)
        cached.size -= size
        self._cache_bytes -= size

    def _evict(self, keep: str) -> None:
        while len(self._cache) > self._max_cached_entities or self._cache_bytes > self._max_cache_bytes:
            oldest = next(iter(self._cache))
            if oldest == keep:
                return
            self._cache_bytes -= self._cache.pop(oldest).size

    def _emit(self, pending: _Pending) -> EntityState:
        attributes = self.attributes(pending.entity_id)
        attributes.update(pending.own)
        return EntityState(entity_id=pending.entity_id, state=pending.state, attributes=attributes,
                           last_updated=pending.last_updated, source=SOURCE, origin=pending.origin,
                           attributes_pieced=True)


def _decode(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(Reason.NOT_UTF8, f"payload is not UTF-8 at byte {exc.start}") from None


def _unquote(text: str) -> str:
    """Some HA versions JSON-encode the state (`"on"`); a payload that is a JSON string literal is unquoted,
    anything else (`on`, `21.5`, a lone `"`) is the state itself."""
    if text.startswith('"'):
        try:
            value = json.loads(text)
        except JSON_ERRORS:
            return text
        if isinstance(value, str):
            return value
    return text


def _state_text(text: str) -> str:
    state = _unquote(text)
    if len(state) > MAX_STATE_CHARS:
        raise Rejected(Reason.SCHEMA, f"state is {len(state)} chars, over {MAX_STATE_CHARS}")
    return state


def _clip(topic: str) -> str:
    return repr(topic if len(topic) <= 120 else topic[:120] + "…")
