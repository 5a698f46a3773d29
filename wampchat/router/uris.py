"""URI checks beyond Autobahn's parser: length, and empty components outside patterns.

Autobahn already refuses URIs that are not strings or contain whitespace or '#'
(a protocol violation); these checks answer with ERROR ``wamp.error.invalid_uri``.
"""

from __future__ import annotations


def invalid_uri_reason(uri: str, pattern: bool, max_length: int) -> str | None:
    """Why uri may not be used (None if it may). Patterns may have empty components."""
    if len(uri) > max_length:
        return f"URI longer than {max_length} characters"
    # Substring tests instead of split(): this runs on every routed request.
    if not pattern and (not uri or ".." in uri or uri[0] == "." or uri[-1] == "."):
        return f"URI {uri!r} has an empty component"
    return None
