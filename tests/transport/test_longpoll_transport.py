"""The long-polling transport alone: polls, posts, timeouts and the Close, on trio's mock clock."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from hub.transport import OutboxFullError, TransportClosed, Wire
from hub.transport.longpoll import (
    LongPollBodyError,
    LongPollSettings,
    LongPollTransport,
    PollError,
    decode_body,
    encode_body,
)

SETTINGS = LongPollSettings(poll_timeout=25.0, reap_timeout=30.0, close_timeout=5.0)


def transport(**changes: object) -> LongPollTransport:
    settings = attrs.evolve(SETTINGS, **changes)
    return LongPollTransport("triohub.v1.json", settings)


async def test_a_poll_is_held_until_a_message_is_sent(autojump_clock):
    lp = transport()
    async with trio.open_nursery() as nursery:
        answers = []

        async def poll():
            answers.append(await lp.poll(0))

        nursery.start_soon(poll)
        await trio.sleep(10)
        assert answers == []
        lp.send(Wire("[7,1]"))
        lp.send(Wire("[7,2]"))
    assert answers[0].body == b"[7,1]\n[7,2]" and answers[0].seq == 2
    assert trio.current_time() == pytest.approx(10)


async def test_a_poll_with_nothing_to_take_ends_empty_after_the_poll_timeout(autojump_clock):
    lp = transport()
    answer = await lp.poll(0)
    assert answer.body == b"" and answer.close is None
    assert trio.current_time() == pytest.approx(25)


async def test_a_client_that_stops_polling_is_reaped_after_the_reap_timeout(autojump_clock):
    lp = transport()
    await lp.poll(0)  # held 25 s; the reap timeout counts from its end
    with pytest.raises(TransportClosed) as closed:
        await lp.receive()
    assert (closed.value.code, closed.value.reason) == (1006, "client stopped polling")
    assert trio.current_time() == pytest.approx(25 + 30)
    with pytest.raises(PollError) as refused:
        await lp.poll(0)
    assert refused.value.status == 410


async def test_a_held_poll_is_never_reaped(autojump_clock):
    lp = transport(poll_timeout=100.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lp.poll, 0)
        with trio.move_on_after(99):
            await lp.receive()
        nursery.cancel_scope.cancel()
    assert not lp.closing


async def test_posted_messages_are_received_in_order_and_bounded():
    lp = transport(max_inbound=3)
    lp.post(["a", "b"])
    assert [await lp.receive(), await lp.receive()] == ["a", "b"]
    lp.post(["c", "d", "e"])
    with pytest.raises(PollError) as refused:
        lp.post(["f"])
    assert refused.value.status == 429


async def test_flush_waits_for_a_poll_and_the_outbox_is_bounded(autojump_clock):
    lp = transport(outbox_capacity=2)
    backlogs = []
    lp.on_backlog = lambda: backlogs.append(trio.current_time())
    lp.send(Wire("1"))
    lp.send(Wire("2"))
    with pytest.raises(OutboxFullError):
        lp.send(Wire("3"))
    assert backlogs == [0] and lp.backlog
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lp.flush)
        await trio.sleep(3)
        answer = await lp.poll(0)
    assert answer.body == b"1\n2" and not lp.backlog
    assert trio.current_time() == pytest.approx(3)


async def test_the_close_comes_after_what_was_queued_and_ends_receiving(autojump_clock):
    lp = transport()
    lp.send(Wire("last words"))
    lp.close(1001, "going away ✈")
    lp.send(Wire("dropped"))
    answer = await lp.poll(0)
    assert answer.body == b"last words" and answer.close == (1001, "going away ✈")
    with pytest.raises(TransportClosed) as closed:
        await lp.receive()
    assert closed.value.code == 1001
    # A poll that lost that answer gets it again.
    again = await lp.poll(0)
    assert again == answer
    await lp.aclose()
    assert trio.current_time() == 0


async def test_a_close_nobody_polls_for_ends_after_the_close_timeout(autojump_clock):
    lp = transport()
    lp.close(1000, "")
    with pytest.raises(TransportClosed):
        await lp.receive()
    assert trio.current_time() == pytest.approx(5)


async def test_a_client_close_ends_receiving_at_once():
    lp = transport()
    lp.client_closed()
    with pytest.raises(TransportClosed) as closed:
        await lp.receive()
    assert (closed.value.code, closed.value.reason) == (1000, "client closed")


def test_bodies_round_trip_in_both_formats_and_refuse_what_they_must():
    assert decode_body(
        encode_body(["[1]", '["é"]'], binary=False), binary=False, max_message_size=100
    ) == ["[1]", '["é"]']
    binary = encode_body([b"\x91\x01", b""], binary=True)
    assert binary == b"\x00\x00\x00\x02\x91\x01\x00\x00\x00\x00"
    assert decode_body(binary, binary=True, max_message_size=100) == [b"\x91\x01", b""]
    for body, binary_, code in [
        (b"\xff", False, 1007),
        (b"x" * 101, False, 1009),
        (b"\x00\x00", True, 1002),
        (b"\x00\x00\x00\x05ab", True, 1002),
        (b"\x00\x00\x01\x00", True, 1009),
    ]:
        with pytest.raises(LongPollBodyError) as refused:
            decode_body(body, binary=binary_, max_message_size=100)
        assert refused.value.code == code, body


async def test_a_client_with_only_latest_value_messages_waiting_is_not_behind():
    lp = transport()
    lp.send(Wire("[7,1]"), key=("t", "state"))
    lp.send(Wire("[7,2]"), key=("t", "state"))
    assert lp.backlog and lp.queued == 1 and not lp.behind
    lp.send(Wire("[7,3]"))
    assert lp.behind
