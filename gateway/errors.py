"""The CoAP errors the gateway answers with (contract §3): each an aiocoap
`ConstructionRenderableError` subclass with its code and a short diagnostic text.

Handlers raise them and aiocoap renders them; the writer process sends its refusals back over
its socket as they are (`PayloadError`, `UnknownBay`, `Unavailable`, `StorageFailed` pickle with
their text and Max-Age), so a refusal keeps its code and text from where it was decided to the
answer. This module imports nothing of the gateway, so every other module can use it.
"""
from __future__ import annotations

from aiocoap import error

# Max-Age (s) of a 5.03 when the database is unreachable.
RETRY_AFTER = 5


class PayloadError(error.BadRequest):
    """4.00 Bad Request: the payload is malformed or invalid; the text says what is wrong."""


class UnknownBay(error.NotFound):
    """4.04 Not Found: a reading names a bay the database does not know (the text names it)."""


class UnsupportedFormat(error.UnsupportedContentFormat):
    """4.15 Unsupported Content-Format: anything but 50, 60, 110 or 112 (or none at all)."""

    def __init__(self, content_format):
        shown = "none" if content_format is None else str(int(content_format))
        super().__init__(
            f"Content-Format {shown} not supported: use 50 (JSON), 60 (CBOR), "
            "110 (SenML JSON) or 112 (SenML CBOR)"
        )


class TooLarge(error.RequestEntityTooLarge):
    """4.13: the body is over the limit; Size1 tells the sensor the limit (RFC 7959 §4)."""

    def __init__(self, size: int, limit: int):
        super().__init__(f"request of {size} bytes is over the limit of {limit} bytes")
        self.limit = limit

    def to_message(self):
        """The answer, with Size1."""
        message = super().to_message()
        message.opt.size1 = self.limit
        return message


class BlockIncomplete(error.RequestEntityIncomplete):
    """4.08: a Block1 block arrived without the blocks before it (RFC 7959 §2.9.2)."""

    message = "block out of sequence: start again with block 0"


class Unavailable(error.ServiceUnavailable):
    """5.03: nothing was stored; Max-Age says when to try again."""

    def __init__(self, message: str | None = None, retry_after: int = RETRY_AFTER):
        super().__init__(f"storage unavailable: retry in {retry_after} s" if message is None else message)
        self.retry_after = retry_after

    def to_message(self):
        """The answer, with Max-Age."""
        message = super().to_message()
        message.opt.max_age = self.retry_after
        return message


class StorageFailed(error.InternalServerError):
    """5.00: storing failed for a reason other than an unavailable database (a bug; logged)."""


class OscoreRequired(error.Unauthorized):
    """4.01: an unprotected POST /occupancy while sensors must use OSCORE (PARKING_SENSOR_AUTH=oscore)."""

    message = "OSCORE required"


class KeyRevoked(error.Unauthorized):
    """4.01: the sensor's credential was revoked (found by the writer, in the transaction that would
    have stored); answered unprotected, like an unknown key."""

    message = "unknown or revoked key"


class ReplayedElsewhere(error.Unauthorized):
    """4.01: the request's OSCORE sequence number is in the sensor's replay window as stored in the
    database (found by the writer, in the transaction that would store): another gateway process
    let it through already. Answered unprotected, like a replay this process sees itself."""

    message = "Replay detected"


class ForeignBay(error.Forbidden):
    """4.03: a reading for a bay not bound to the sending sensor; the whole request is refused."""

    def __init__(self, bay: str, sensor: str):
        super().__init__(f"bay {bay} is not bound to sensor {sensor}")
