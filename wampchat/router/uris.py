"""URI checks beyond Autobahn's parser: length, and empty components outside patterns.

Autobahn already refuses URIs that are not strings or contain whitespace or '#'
(a protocol violation); these checks answer with ERROR ``wamp.error.invalid_uri``.
"""

from __future__ import annotations


def invalid_uri_reason(uri: str, pattern: bool, max_length: int) -> str | None:
    """Why uri may not be used (None if it may). Patterns may have empty components."""
    if len(uri) > max_length:
        return f"URI longer than {max_length} characters"
    if not pattern:
        if not uri or any(not part for part in uri.split(".")):
            return f"URI {uri!r} has an empty component"
    return None
