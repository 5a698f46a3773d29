"""The process-wide WAMP serializers, which turn a request with a malformed URI into an answer.

Autobahn's ``unserialize`` raises ``InvalidUriError`` for a message whose URI does not
parse (``SUBSCRIBE "chat main"``), losing which request it was. WAMP wants that request
answered with ERROR ``wamp.error.invalid_uri``. On that (rare) error these serializers
decode the payload again and hand the session an ``InvalidUriRequest`` in its place,
so the client gets its answer instead of a hang.

They also skip Autobahn's per-message traffic statistics (nothing here reads them) and
encode JSON with one C encoder built once, instead of a new encoder object per message.
"""

from __future__ import annotations

import base64
import decimal
import json
import json.encoder
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


class _RouterSerializer:
    """Autobahn's Serializer, less its statistics, answering malformed URIs (see above)."""

    def serialize(self, msg: Any) -> tuple[bytes, bool]:
        inner = self._serializer                                    # type: ignore[attr-defined]
        return msg.serialize(inner), inner.BINARY

    def unserialize(self, payload: bytes, isBinary: bool | None = None) -> list[Any]:
        """Autobahn's checks and message classes, without its statistics."""
        inner = self._serializer                                    # type: ignore[attr-defined]
        if isBinary is not None and isBinary != inner.BINARY:
            raise ProtocolError(f"invalid serialization of WAMP message (binary {isBinary}, "
                                f"but expected {inner.BINARY})")
        try:
            raw_messages = inner.unserialize(payload)
        except Exception as exc:
            raise ProtocolError(f"invalid serialization of WAMP message: "
                                f"{type(exc).__name__} {exc}") from None
        try:
            return [self._parse(raw) for raw in raw_messages]
        except InvalidUriError:
            return self._salvage(payload)

    def _parse(self, raw: Any) -> Any:
        if type(raw) is not list:
            raise ProtocolError(f"invalid type {type(raw)} for WAMP message")
        if not raw:
            raise ProtocolError("missing message type in WAMP message")
        message_type = raw[0]
        if type(message_type) is not int:
            raise ProtocolError(f"invalid type {type(message_type)} for WAMP message type")
        kind = self.MESSAGE_TYPE_MAP.get(message_type)              # type: ignore[attr-defined]
        if kind is None:
            raise ProtocolError(f"invalid WAMP message type {message_type}")
        return kind.parse(raw)

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


def _json_default(value: Any) -> Any:
    """What Autobahn's JSON encoder does for values JSON lacks: WAMP's binary strings."""
    if isinstance(value, bytes):
        return "\x00" + base64.b64encode(value).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The C encoder json.dumps would build per call, built once: compact separators, UTF-8
# text unescaped, NaN allowed (as Autobahn's). No circular-reference bookkeeping: WAMP
# payloads come from a decoder or from router code; a cycle ends in RecursionError,
# which the transport reports like any value it cannot encode.
_encode_json = json.encoder.c_make_encoder(
    None, _json_default, json.encoder.c_encode_basestring, None, ":", ",", False, False, True)


class _FastJsonObjectSerializer(JsonObjectSerializer):
    """Decodes with the C scanner unless the text holds WAMP's binary-in-JSON strings.

    Autobahn's decoder turns strings starting with NUL into bytes and so must use the
    pure-Python scanner for every message (the largest single cost of a JSON session in
    the profile). A NUL inside a JSON string is always written as the escape \\u0000, so
    a payload without that escape has no binary strings: json.loads decodes it exactly.
    """

    def serialize(self, obj: Any) -> bytes:
        if self._batched or self._use_binary_hex_encoding:
            return super().serialize(obj)
        return "".join(_encode_json(obj, 0)).encode("utf8")

    def unserialize(self, payload: bytes) -> list[Any]:
        if self._batched or b"\\u0000" in payload:
            return super().unserialize(payload)
        return [json.loads(payload.decode("utf8"))]


class RouterJsonSerializer(_RouterSerializer, JsonSerializer):
    def __init__(self) -> None:
        super().__init__()
        self._serializer = _FastJsonObjectSerializer()


class RouterMsgPackSerializer(_RouterSerializer, MsgPackSerializer):
    pass


class RouterCBORSerializer(_RouterSerializer, CBORSerializer):
    pass
