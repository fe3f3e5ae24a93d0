"""Block1 (RFC 7959) assembly for POST /occupancy, with the memory it may hold bounded.

aiocoap's `Block1Spool` keeps every unfinished transfer (its whole request message) for 93 s,
without any limit: a client that sends block 0 with More set under a new Uri-Query each time and
never goes on grew the gateway by ~1 GB in 16 s (#14). This module owns `Block1Assembler`,
which joins the blocks of one transfer as aiocoap does (the same key: the peer and every option
but the block options; a block continues where the last one ended) but keeps only the payload
so far, and refuses what it will not hold:

- at most `PER_SOURCE` unfinished transfers per source address (its host, whatever the port): a
  new one pushes out that source's oldest, whose next block then gets 4.08;
- at most `MAX_TRANSFERS` unfinished transfers and `MAX_BYTES` of payload in them in all: beyond
  that a new transfer gets 5.03 with Max-Age (`BUSY_RETRY_AFTER`);
- an unfinished transfer is forgotten `LIFETIME` seconds after its last block;
- a block with More set must carry exactly its block size (RFC 7959 §2.2), and a block must
  start where the transfer stands: anything else is 4.00 or 4.08 with a text saying which.

The size limit of the whole body is the resource's (`gateway.resources.MAX_PAYLOAD`).
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import NamedTuple

from aiocoap import error
from aiocoap.blockwise import ContinueException
from aiocoap.numbers.optionnumbers import OptionNumber

from .errors import BlockIncomplete, Unavailable
from .transport import peer_host

# Limits of what unfinished transfers may hold (stated in docs/sensors.md). A sensor sends its
# blocks back to back, one per answer, so it has one transfer open at a time, a few at most.
PER_SOURCE = 8
MAX_TRANSFERS = 1024
MAX_BYTES = 4 * 1024 * 1024
# Seconds after its last block an unfinished transfer is dropped: past a CON's last retransmission
# (45 s after the first), so a slow but live sensor is never cut off.
LIFETIME = 60.0
BUSY_RETRY_AFTER = 5  # Max-Age (s) of the 5.03 when the transfers are full
_BLOCK_OPTIONS = (OptionNumber.BLOCK1, OptionNumber.BLOCK2, OptionNumber.OBSERVE)


class Whole(NamedTuple):
    """A request body as assembled: its payload, Content-Format and the last block's Block1 (or None)."""

    payload: bytes
    content_format: object
    block1: object


@dataclass(eq=False, slots=True)
class _Transfer:
    """One unfinished transfer: where it came from, the payload so far and when its last block came."""

    source: str
    payload: bytearray
    touched: float


class Block1Assembler:
    """Joins Block1 blocks into whole bodies, holding at most the limits above."""

    def __init__(self, *, per_source: int = PER_SOURCE, max_transfers: int = MAX_TRANSFERS,
                 max_bytes: int = MAX_BYTES, lifetime: float = LIFETIME, clock=time.monotonic):
        self.per_source = per_source
        self.max_transfers = max_transfers
        self.max_bytes = max_bytes
        self.lifetime = lifetime
        self.clock = clock
        self.bytes = 0  # payload held by unfinished transfers
        self._transfers: collections.OrderedDict[tuple, _Transfer] = collections.OrderedDict()  # oldest first
        self._per_source: collections.Counter[str] = collections.Counter()

    @property
    def transfers(self) -> int:
        """Unfinished transfers held now."""
        return len(self._transfers)

    def feed(self, request) -> Whole:
        """The whole body once it is complete; raises 2.31 Continue for a block that is not the
        last, and 4.00 / 4.08 / 5.03 for one that is refused."""
        block1 = request.opt.block1
        if block1 is None:
            return Whole(request.payload, request.opt.content_format, None)
        if block1.size_exponent == 7:
            raise error.BadRequest("Block1 size exponent 7 (BERT) is for CoAP over TCP: use 16 to 1024 bytes")
        if block1.more and len(request.payload) != block1.size:
            raise error.BadRequest(f"Block1 block {block1.block_number} must carry its block size of "
                                   f"{block1.size} bytes (it carries {len(request.payload)})")
        now = self.clock()
        self._expire(now)
        key = _key(request)
        if block1.block_number == 0:
            self._drop(key)  # a sensor starting again
            if not block1.more:
                return Whole(request.payload, request.opt.content_format, block1)
            self._open(key, _source(request), request.payload, now)
            raise ContinueException(block1)
        transfer = self._transfers.get(key)
        if transfer is None:
            raise BlockIncomplete(f"block {block1.block_number} without block 0 (or its transfer expired): "
                                  "start again with block 0")
        if block1.start != len(transfer.payload):
            self._drop(key)
            raise BlockIncomplete(f"block {block1.block_number} of {block1.size} bytes starts at byte "
                                  f"{block1.start}, but {len(transfer.payload)} bytes have arrived: "
                                  "start again with block 0")
        transfer.payload += request.payload
        self.bytes += len(request.payload)
        transfer.touched = now
        self._transfers.move_to_end(key)
        if block1.more:
            raise ContinueException(block1)
        self._drop(key)
        return Whole(bytes(transfer.payload), request.opt.content_format, block1)

    def discard(self, request) -> None:
        """Forget the transfer this block belongs to (it was refused, e.g. over the size limit)."""
        if request.opt.block1 is not None:
            self._drop(_key(request))

    def _open(self, key: tuple, source: str, payload: bytes, now: float) -> None:
        """Hold a new transfer's block 0, making room within the source's share, or refuse (5.03)."""
        if self._per_source[source] >= self.per_source:
            oldest = next(k for k, t in self._transfers.items() if t.source == source)
            self._drop(oldest)
        if len(self._transfers) >= self.max_transfers or self.bytes + len(payload) > self.max_bytes:
            raise Unavailable("too many unfinished block-wise transfers: retry in "
                              f"{BUSY_RETRY_AFTER} s", BUSY_RETRY_AFTER)
        self._transfers[key] = _Transfer(source, bytearray(payload), now)
        self._per_source[source] += 1
        self.bytes += len(payload)

    def _drop(self, key: tuple) -> None:
        """Forget one transfer (if held)."""
        transfer = self._transfers.pop(key, None)
        if transfer is not None:
            self.bytes -= len(transfer.payload)
            self._per_source[transfer.source] -= 1
            if not self._per_source[transfer.source]:
                del self._per_source[transfer.source]

    def _expire(self, now: float) -> None:
        """Forget the transfers whose last block is older than the lifetime (oldest come first)."""
        while self._transfers:
            key, transfer = next(iter(self._transfers.items()))
            if now - transfer.touched < self.lifetime:
                return
            self._drop(key)


def _key(request) -> tuple:
    """What all blocks of one transfer share: the peer and every option but the block options."""
    return request.remote.blockwise_key, request.get_cache_key(_BLOCK_OPTIONS)


def _source(request) -> str:
    """The sending host, without its port: one sensor (or one attacker) whatever ports it uses."""
    return peer_host(request.remote)
