"""Block1 assembly with bounded memory (gateway/blockwise.py): the limits per source and in all,
the lifetime of an unfinished transfer, and the payload it holds going back to zero. Over the
real gateway: tests/test_gateway.py (misuse answers) and tests/test_gateway_abuse.py (a flood)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from aiocoap import Message
from aiocoap.blockwise import ContinueException
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption

from gateway.blockwise import Block1Assembler
from gateway.errors import BlockIncomplete, Unavailable


@dataclass(frozen=True)
class Peer:
    """What the assembler reads of a request's remote (aiocoap's UDP6EndpointAddress has both)."""

    host: str
    port: int

    @property
    def blockwise_key(self):
        return (self.host, self.port)

    @property
    def hostinfo(self):
        return f"{self.host}:{self.port}"


def block(peer: Peer, number: int, more: bool, payload: bytes, query: str = "", szx: int = 2) -> Message:
    message = Message(code=Code.POST, payload=payload, content_format=50, uri_path=("occupancy",))
    message.opt.block1 = BlockOption.BlockwiseTuple(number, more, szx)
    if query:
        message.opt.uri_query = (query,)
    message.remote = peer
    return message


A, B, C, D = (Peer(f"192.0.2.{i}", 5683) for i in range(1, 5))


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_transfer_is_joined_and_its_payload_released():
    blocks = Block1Assembler()
    with pytest.raises(ContinueException):
        blocks.feed(block(A, 0, True, b"a" * 64))
    assert (blocks.transfers, blocks.bytes) == (1, 64)
    whole = blocks.feed(block(A, 1, False, b"b" * 10))
    assert (whole.payload, whole.content_format, whole.block1.block_number) == (b"a" * 64 + b"b" * 10, 50, 1)
    assert (blocks.transfers, blocks.bytes) == (0, 0)


def test_a_source_over_its_share_pushes_out_its_own_oldest():
    blocks = Block1Assembler(per_source=2)
    for query in ("q=1", "q=2", "q=3"):
        with pytest.raises(ContinueException):
            blocks.feed(block(A, 0, True, b"x" * 64, query))
    with pytest.raises(ContinueException):  # another source is not touched
        blocks.feed(block(B, 0, True, b"x" * 64, "q=1"))
    assert blocks.transfers == 3 and blocks.bytes == 3 * 64
    with pytest.raises(BlockIncomplete, match="block 1 without block 0"):
        blocks.feed(block(A, 1, False, b"y", "q=1"))
    assert blocks.feed(block(A, 1, False, b"y", "q=3")).payload == b"x" * 64 + b"y"
    assert blocks.feed(block(B, 1, False, b"y", "q=1")).payload == b"x" * 64 + b"y"


@pytest.mark.parametrize("limits", [{"max_transfers": 3}, {"max_bytes": 100}])
def test_beyond_the_total_a_new_transfer_is_503_with_max_age(limits):
    blocks = Block1Assembler(**limits)
    for peer in (A, B, C):  # three transfers of 32 bytes: at either limit
        with pytest.raises(ContinueException):
            blocks.feed(block(peer, 0, True, b"x" * 32, szx=1))
    with pytest.raises(Unavailable) as refused:
        blocks.feed(block(D, 0, True, b"x" * 32, szx=1))
    message = refused.value.to_message()
    assert (message.code, message.opt.max_age) == (Code.SERVICE_UNAVAILABLE, 5)
    assert message.payload == b"too many unfinished block-wise transfers: retry in 5 s"
    assert (blocks.transfers, blocks.bytes) == (3, 96)
    # A single-block request needs no room, and a transfer under way still finishes.
    assert blocks.feed(block(D, 0, False, b"z")).payload == b"z"
    assert blocks.feed(block(A, 1, False, b"y", szx=1)).payload == b"x" * 32 + b"y"


def test_an_unfinished_transfer_is_forgotten_after_its_lifetime():
    clock = Clock()
    blocks = Block1Assembler(lifetime=60, clock=clock)
    with pytest.raises(ContinueException):
        blocks.feed(block(A, 0, True, b"x" * 64))
    clock.now += 59
    with pytest.raises(ContinueException):
        blocks.feed(block(A, 1, True, b"x" * 64))  # a block renews it
    clock.now += 61
    with pytest.raises(BlockIncomplete):
        blocks.feed(block(A, 2, False, b"x"))
    assert (blocks.transfers, blocks.bytes) == (0, 0)
