"""Which home a topic belongs to, on a broker many homes share (registry mode).

Homes' prefixes are disjoint (migration 0011 refuses a prefix that starts another's), so at most one
prefix is a leading part of a topic. Every prefix ends with `/`, so the candidates are the topic's
leading segments: a lookup per `/` in the topic (a handful) instead of a scan of 1,000 prefixes.
`within` is the one rule for "this topic is this home's" (a discovery config may not make the worker
read outside it).
"""

from __future__ import annotations

from collections.abc import Iterable


def within(topic: str, prefix: str) -> bool:
    """Whether `topic` is one of the home's topics: under its prefix ('' = the whole namespace is its)."""
    return topic.startswith(prefix)


class TenantRouter:
    """Prefix → tenant, rebuilt when the tenant set changes; `route` is on the hot path."""

    def __init__(self, prefixes: Iterable[tuple[str, str]] = ()) -> None:
        """`prefixes`: (topic prefix ending with '/', tenant id) pairs, disjoint."""
        self._by_prefix: dict[str, str] = {}
        for prefix, tenant in prefixes:
            self.add(prefix, tenant)

    def add(self, prefix: str, tenant: str) -> None:
        if not prefix.endswith("/") or prefix.startswith("/"):
            raise ValueError(f"topic_prefix {prefix!r} of tenant {tenant} must end with '/' and not start with it")
        self._by_prefix[prefix] = tenant

    def remove(self, prefix: str) -> None:
        self._by_prefix.pop(prefix, None)

    def __len__(self) -> int:
        return len(self._by_prefix)

    def route(self, topic: str) -> str | None:
        """The tenant whose prefix `topic` starts with, or None."""
        by_prefix = self._by_prefix
        end = topic.find("/")
        while end >= 0:
            tenant = by_prefix.get(topic[:end + 1])
            if tenant is not None:
                return tenant
            end = topic.find("/", end + 1)
        return None
