"""UriMap: exact, prefix and wildcard matches, best() precedence, and pruning on remove."""

import pytest

from wampchat.router.matching import UriMap


def build(entries):
    """A UriMap holding each (pattern, match) with itself as the value."""
    table = UriMap()
    for pattern, match in entries:
        table.add(pattern, match, (pattern, match))
    return table


@pytest.mark.parametrize("pattern, match, uri, expected", [
    ("com.a.b", "exact", "com.a.b", True),
    ("com.a.b", "exact", "com.a.bc", False),
    ("com.a.b", "exact", "com.a", False),
    ("com.a", "prefix", "com.a", True),
    ("com.a", "prefix", "com.a.b", True),
    ("com.a", "prefix", "com.ab", True),          # WAMP prefixes are plain string prefixes
    ("com.a", "prefix", "com.", False),
    ("", "prefix", "anything.at.all", True),
    ("com..update", "wildcard", "com.user.update", True),
    ("com..update", "wildcard", "com.user.delete", False),
    ("com..update", "wildcard", "com.user.x.update", False),  # component count must agree
    ("com..update", "wildcard", "com.update", False),
    ("..", "wildcard", "a.b.c", True),
    ("..", "wildcard", "a.b", False),
    ("a.", "wildcard", "a.b", True),
    ("a.", "wildcard", "b.b", False),
])
def test_matches_follow_each_policy(pattern, match, uri, expected):
    """matches() finds a pattern exactly when its policy says the URI matches."""
    table = build([(pattern, match)])
    assert (table.matches(uri) == [(pattern, match)]) is expected


def test_matches_lists_every_matching_entry_in_order():
    """matches() returns exact first, then prefixes by length, then wildcards."""
    table = build([("a..c", "wildcard"), ("a.b", "prefix"), ("a", "prefix"),
                   ("a.b.c", "exact"), ("x", "prefix")])
    assert table.matches("a.b.c") == [("a.b.c", "exact"), ("a", "prefix"), ("a.b", "prefix"),
                                      ("a..c", "wildcard")]


@pytest.mark.parametrize("entries, uri, expected", [
    ([("a.b.c", "exact"), ("a.b", "prefix"), ("a..c", "wildcard")], "a.b.c", ("a.b.c", "exact")),
    ([("a", "prefix"), ("a.b", "prefix"), ("a..c", "wildcard")], "a.b.c", ("a.b", "prefix")),
    ([("a", "prefix"), ("a.b.c.d", "prefix")], "a.b.c", ("a", "prefix")),
    ([("a..c", "wildcard"), ("a.b.", "wildcard")], "a.b.c", ("a.b.", "wildcard")),
    ([("..c", "wildcard"), (".b.c", "wildcard")], "a.b.c", (".b.c", "wildcard")),
    ([("a...", "wildcard"), ("a..c.", "wildcard")], "a.b.c.d", ("a..c.", "wildcard")),
    ([("a..c", "wildcard"), ("a..d", "wildcard")], "a.b.e", None),
])
def test_best_prefers_exact_then_longest_prefix_then_latest_wildcard(entries, uri, expected):
    """best() applies the precedence of the WAMP spec for pattern-based registrations."""
    assert build(entries).best(uri) == expected


def test_best_on_wildcard_ties_is_deterministic():
    """Equally specific wildcards are decided by the pattern that sorts first."""
    table = build([("a.x.", "wildcard"), (".b.c", "wildcard"), ("a..c", "wildcard")])
    assert table.best("a.x.c") == ("a.x.", "wildcard")
    tie = build([("a..c.", "wildcard"), ("a...d", "wildcard")])
    assert tie.best("a.b.c.d") == ("a...d", "wildcard")


def test_get_and_remove_address_one_policy_only():
    """The same pattern under two policies is two entries."""
    table = build([("a.b", "exact"), ("a.b", "prefix")])
    assert table.get("a.b", "prefix") == ("a.b", "prefix")
    assert table.remove("a.b", "exact") == ("a.b", "exact")
    assert table.get("a.b", "exact") is None
    assert table.matches("a.b") == [("a.b", "prefix")]
    assert len(table) == 1


def test_removing_prefixes_forgets_their_lengths():
    """After a prefix is removed, URIs it matched no longer match and len() drops."""
    table = build([("a.b", "prefix"), ("a.c", "prefix")])
    table.remove("a.b", "prefix")
    assert table.matches("a.b.x") == []
    assert table.matches("a.c.x") == [("a.c", "prefix")]
    table.remove("a.c", "prefix")
    assert len(table) == 0 and table.best("a.c.x") is None


def test_removing_wildcards_prunes_the_trie():
    """Removing every wildcard leaves no stored pattern behind (empty branches pruned)."""
    table = build([("a..c", "wildcard"), ("a.b.", "wildcard"), ("a..", "wildcard")])
    for pattern in ("a..c", "a.b.", "a.."):
        assert table.remove(pattern, "wildcard") == (pattern, "wildcard")
    assert len(table) == 0
    assert list(table.items()) == []
    assert table.matches("a.b.c") == []
    assert table.remove("a..c", "wildcard") is None


def test_removing_one_wildcard_keeps_its_siblings():
    """Pruning stops at nodes still holding another pattern."""
    table = build([("a..c", "wildcard"), ("a..c.d", "wildcard")])
    table.remove("a..c.d", "wildcard")
    assert table.matches("a.b.c") == [("a..c", "wildcard")]
    assert table.get("a..c", "wildcard") == ("a..c", "wildcard")
    table.add("a..c.d", "wildcard", "again")
    table.remove("a..c", "wildcard")
    assert table.matches("a.b.c.d") == ["again"]


def test_items_lists_every_entry():
    """items() yields every stored (pattern, match, value)."""
    entries = [("a", "exact"), ("b", "prefix"), ("c..", "wildcard"), ("c.d", "wildcard")]
    table = build(entries)
    assert sorted((p, m) for p, m, _ in table.items()) == sorted(entries)


def test_unknown_policy_is_refused():
    """add() with a match policy other than exact/prefix/wildcard raises ValueError."""
    with pytest.raises(ValueError):
        UriMap().add("a", "regex", 1)
