"""URI pattern tables shared by the broker, the dealer and the permissions.

A ``UriMap`` holds values under (pattern, match) keys, where match is one of

- ``exact``: the URI equals the pattern;
- ``prefix``: the URI starts with the pattern (plain string prefix, as WAMP defines it;
  the empty prefix matches every URI);
- ``wildcard``: the pattern has the same number of dot-separated components as the
  URI and every non-empty component is equal (``com..update`` matches
  ``com.user.update``).

Lookups never scan all entries: exact patterns live in a dict, prefixes in a dict
probed only at the prefix lengths in use, wildcards in a trie over components with
a wildcard branch at each level.

Precedence for ``best()`` (the WAMP rule for pattern-based registrations):
exact first, then the longest matching prefix, then among wildcards the one whose
first wildcard component comes latest, then the one with more concrete
components, then the pattern that sorts first (so the choice is deterministic).
"""

from __future__ import annotations

from typing import Generic, Iterator, Literal, TypeVar

T = TypeVar("T")
Match = Literal["exact", "prefix", "wildcard"]
MATCH_POLICIES: tuple[str, ...] = ("exact", "prefix", "wildcard")


class _WildcardNode(Generic[T]):
    __slots__ = ("children", "values")

    def __init__(self) -> None:
        self.children: dict[str, _WildcardNode[T]] = {}  # component ("" = wildcard) -> node
        self.values: dict[str, T] = {}                   # full pattern ending here -> value


def wildcard_rank(pattern: str) -> tuple[int, int, str]:
    """Sort key for competing wildcard patterns: smaller is more specific."""
    parts = pattern.split(".")
    first_wild = next((i for i, p in enumerate(parts) if p == ""), len(parts))
    concrete = sum(1 for p in parts if p)
    return (-first_wild, -concrete, pattern)


class UriMap(Generic[T]):
    """Values keyed by (pattern, match); finds every entry matching a concrete URI."""

    def __init__(self) -> None:
        self._exact: dict[str, T] = {}           # uri -> value
        self._prefix: dict[str, T] = {}          # prefix -> value
        self._prefix_lengths: dict[int, int] = {}  # prefix length -> how many prefixes have it
        self._sorted_lengths: list[int] = []     # the keys of _prefix_lengths, ascending
        self._wild_root: _WildcardNode[T] = _WildcardNode()
        self._wild_count = 0

    def __len__(self) -> int:
        return len(self._exact) + len(self._prefix) + self._wild_count

    def get(self, pattern: str, match: Match) -> T | None:
        """The value stored under exactly this (pattern, match), or None."""
        if match == "exact":
            return self._exact.get(pattern)
        if match == "prefix":
            return self._prefix.get(pattern)
        node = self._wild_node(pattern, create=False)
        return node.values.get(pattern) if node else None

    def add(self, pattern: str, match: Match, value: T) -> None:
        """Store value under (pattern, match), replacing any previous one."""
        if match == "exact":
            self._exact[pattern] = value
        elif match == "prefix":
            if pattern not in self._prefix:
                n = len(pattern)
                self._prefix_lengths[n] = self._prefix_lengths.get(n, 0) + 1
                self._sorted_lengths = sorted(self._prefix_lengths)
            self._prefix[pattern] = value
        elif match == "wildcard":
            node = self._wild_node(pattern, create=True)
            if pattern not in node.values:
                self._wild_count += 1
            node.values[pattern] = value
        else:
            raise ValueError(f"unknown match policy {match!r}")

    def remove(self, pattern: str, match: Match) -> T | None:
        """Remove and return the value under (pattern, match), if any."""
        if match == "exact":
            return self._exact.pop(pattern, None)
        if match == "prefix":
            value = self._prefix.pop(pattern, None)
            if value is not None:
                n = len(pattern)
                self._prefix_lengths[n] -= 1
                if not self._prefix_lengths[n]:
                    del self._prefix_lengths[n]
                    self._sorted_lengths = sorted(self._prefix_lengths)
            return value
        return self._remove_wildcard(pattern)

    def matches(self, uri: str) -> list[T]:
        """Every value whose pattern matches uri: exact, then prefixes, then wildcards."""
        found: list[T] = []
        value = self._exact.get(uri)
        if value is not None:
            found.append(value)
        if self._prefix:
            prefixes = self._prefix
            for n in self._sorted_lengths:
                if n > len(uri):
                    break
                value = prefixes.get(uri[:n])
                if value is not None:
                    found.append(value)
        if self._wild_count:
            found.extend(value for _, value in self._wildcard_matches(uri))
        return found

    def best(self, uri: str) -> T | None:
        """The single most specific value matching uri (see module docstring), or None."""
        value = self._exact.get(uri)
        if value is not None:
            return value
        for n in reversed(self._sorted_lengths):
            if n <= len(uri):
                value = self._prefix.get(uri[:n])
                if value is not None:
                    return value
        if self._wild_count:
            candidates = list(self._wildcard_matches(uri))
            if candidates:
                return min(candidates, key=lambda item: wildcard_rank(item[0]))[1]
        return None

    def items(self) -> Iterator[tuple[str, Match, T]]:
        """Every (pattern, match, value) stored."""
        for pattern, value in self._exact.items():
            yield pattern, "exact", value
        for pattern, value in self._prefix.items():
            yield pattern, "prefix", value
        stack = [self._wild_root]
        while stack:
            node = stack.pop()
            for pattern, value in node.values.items():
                yield pattern, "wildcard", value
            stack.extend(node.children.values())

    def _wild_node(self, pattern: str, create: bool) -> _WildcardNode[T] | None:
        node = self._wild_root
        for part in pattern.split("."):
            child = node.children.get(part)
            if child is None:
                if not create:
                    return None
                child = node.children[part] = _WildcardNode()
            node = child
        return node

    def _remove_wildcard(self, pattern: str) -> T | None:
        path = [self._wild_root]
        parts = pattern.split(".")
        for part in parts:
            child = path[-1].children.get(part)
            if child is None:
                return None
            path.append(child)
        value = path[-1].values.pop(pattern, None)
        if value is None:
            return None
        self._wild_count -= 1
        # Prune branches left empty, so the trie does not grow with churn.
        for depth in range(len(parts), 0, -1):
            node = path[depth]
            if node.values or node.children:
                break
            del path[depth - 1].children[parts[depth - 1]]
        return value

    def _wildcard_matches(self, uri: str) -> Iterator[tuple[str, T]]:
        level = [self._wild_root]
        for part in uri.split("."):
            next_level = []
            for node in level:
                child = node.children.get(part)
                if child is not None:
                    next_level.append(child)
                if part:
                    wild = node.children.get("")
                    if wild is not None:
                        next_level.append(wild)
            if not next_level:
                return
            level = next_level
        for node in level:
            yield from node.values.items()
