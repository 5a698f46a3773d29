"""The process-wide WAMP serializers, which turn a request with a malformed URI into an answer.

Autobahn's ``unserialize`` raises ``InvalidUriError`` for a message whose URI does not
parse (``SUBSCRIBE "chat main"``), losing which request it was. WAMP wants that request
answered with ERROR ``wamp.error.invalid_uri``. On that (rare) error these serializers
decode the payload again and hand the session an ``InvalidUriRequest`` in its place,
so the client gets its answer instead of a hang. The hot path is Autobahn's own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from autobahn.wamp import message
from autobahn.wamp.exception import InvalidUriError, ProtocolError
from autobahn.wamp.serializer import (CBORSerializer, JsonObjectSerializer, JsonSerializer,
                                      MsgPackSerializer)

# Messages a peer sends that carry a request id in position 1.
_REQUESTS = frozenset(kind.MESSAGE_TYPE for kind in (
    message.Subscribe, message.Unsubscribe, message.Publish, message.Register,
    message.Unregister, message.Call))


@dataclass(frozen=True)
class InvalidUriRequest:
    """A message that did not parse because of a URI: its type, request id and the reason."""

    message_type: int
    request: int | None
    acknowledge: bool
    reason: str


class _AnswersInvalidUris:
    def unserialize(self, payload: bytes, isBinary: bool | None = None) -> list[Any]:
        try:
            return super().unserialize(payload, isBinary)   # type: ignore[misc]
        except InvalidUriError:
            return self._salvage(payload)

    def _salvage(self, payload: bytes) -> list[Any]:
        """Decode again; each message that fails on a URI becomes an InvalidUriRequest."""
        try:
            raw_messages = self._serializer.unserialize(payload)   # type: ignore[attr-defined]
        except Exception as exc:
            raise ProtocolError(f"invalid serialization of WAMP message: {exc}") from None
        parsed: list[Any] = []
        for raw in raw_messages:
            kind = self.MESSAGE_TYPE_MAP.get(raw[0]) if isinstance(raw, list) and raw \
                and isinstance(raw[0], int) else None                # type: ignore[attr-defined]
            if kind is None:
                raise ProtocolError(f"invalid WAMP message {str(raw)[:60]}")
            try:
                parsed.append(kind.parse(raw))
            except InvalidUriError as exc:
                request = raw[1] if kind.MESSAGE_TYPE in _REQUESTS and len(raw) > 1 \
                    and isinstance(raw[1], int) and not isinstance(raw[1], bool) else None
                options = raw[2] if len(raw) > 2 and isinstance(raw[2], dict) else {}
                parsed.append(InvalidUriRequest(kind.MESSAGE_TYPE, request,
                                                options.get("acknowledge") is True, str(exc)))
        return parsed


class _FastJsonObjectSerializer(JsonObjectSerializer):
    """Decodes with the C scanner unless the text holds WAMP's binary-in-JSON strings.

    Autobahn's decoder turns strings starting with NUL into bytes and so must use the
    pure-Python scanner for every message (the largest single cost of a JSON session in
    the profile). A NUL inside a JSON string is always written as the escape \\u0000, so
    a payload without that escape has no binary strings: json.loads decodes it exactly.
    """

    def unserialize(self, payload: bytes) -> list[Any]:
        if self._batched or b"\\u0000" in payload:
            return super().unserialize(payload)
        return [json.loads(payload.decode("utf8"))]


class RouterJsonSerializer(_AnswersInvalidUris, JsonSerializer):
    def __init__(self) -> None:
        super().__init__()
        self._serializer = _FastJsonObjectSerializer()


class RouterMsgPackSerializer(_AnswersInvalidUris, MsgPackSerializer):
    pass


class RouterCBORSerializer(_AnswersInvalidUris, CBORSerializer):
    pass
