"""Mailboxes: overflow policies, drop counts, batched drain, order and close."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import trio
import trio.testing
from actors_support import idle, take_queued
from hypothesis import given
from hypothesis import strategies as st

import actors
from actors import ActorExitedError, Mailbox, MailboxFullError, Overflow
from actors.mailbox import Delivery


def by_letter(message: Any) -> Any:
    """Conflate key: the first item of a (key, value) pair; None for anything else."""
    return message[0] if isinstance(message, tuple) else None


# --- WAIT ------------------------------------------------------------------------


async def test_wait_send_waits_for_room_then_proceeds() -> None:
    mailbox = Mailbox(capacity=2, overflow=Overflow.WAIT, owner="worker")
    await mailbox.send("a")
    await mailbox.send("b")
    sent = trio.Event()

    async def send_third() -> None:
        await mailbox.send("c")
        sent.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_third)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set(), "a WAIT send to a full mailbox must wait"
        assert len(mailbox) == 2

        assert await mailbox.receive() == "a"
        await sent.wait()

    assert take_queued(mailbox) == ["b", "c"]
    assert mailbox.dropped == 0


async def test_wait_senders_proceed_in_turn_as_room_appears() -> None:
    mailbox = Mailbox(capacity=1, overflow=Overflow.WAIT)
    received = []
    async with trio.open_nursery() as nursery:
        for message in range(5):
            nursery.start_soon(mailbox.send, message)
            # Let each sender queue or park before the next one starts, so
            # that the order of the sends is the order of the messages.
            await trio.testing.wait_all_tasks_blocked()
        assert len(mailbox) == 1
        for _ in range(5):
            received.append(await mailbox.receive())
    assert received == [0, 1, 2, 3, 4]


async def test_wait_send_nowait_on_full_raises_a_helpful_error() -> None:
    mailbox = Mailbox(capacity=2, overflow=Overflow.WAIT, owner="worker#7")
    mailbox.send_nowait("a")
    mailbox.send_nowait("b")

    with pytest.raises(MailboxFullError) as caught:
        mailbox.send_nowait("c")

    error = caught.value
    assert error.actor == "worker#7"
    assert error.capacity == 2
    message = str(error)
    assert "worker#7" in message
    assert "2 messages" in message
    assert "raise the capacity" in message  # it says what to do about it
    assert take_queued(mailbox) == ["a", "b"]
    assert mailbox.dropped == 0  # refusing is not dropping


async def test_wait_send_cancelled_while_waiting_delivers_nothing(autojump_clock: Any) -> None:
    mailbox = Mailbox(capacity=1, overflow=Overflow.WAIT)
    mailbox.send_nowait("a")
    with trio.move_on_after(1) as scope:
        await mailbox.send("b")
    assert scope.cancelled_caught
    assert take_queued(mailbox) == ["a"]


# --- FAIL ------------------------------------------------------------------------


async def test_fail_raises_on_both_send_and_send_nowait() -> None:
    mailbox = Mailbox(capacity=2, overflow=Overflow.FAIL, owner="fast")
    assert mailbox.send_nowait("a") is True
    assert await mailbox.send("b") is True

    with pytest.raises(MailboxFullError, match="mailbox of fast is full"):
        mailbox.send_nowait("c")
    with trio.fail_after(1), pytest.raises(MailboxFullError):
        await mailbox.send("c")  # at once: FAIL never waits

    assert take_queued(mailbox) == ["a", "b"]
    assert mailbox.dropped == 0


# --- DROP_NEWEST -------------------------------------------------------------------


async def test_drop_newest_drops_the_incoming_message_and_counts_it() -> None:
    mailbox = Mailbox(capacity=2, overflow=Overflow.DROP_NEWEST)
    assert mailbox.send_nowait("a") is True
    assert mailbox.send_nowait("b") is True
    assert mailbox.send_nowait("c") is False
    with trio.fail_after(1):
        assert await mailbox.send("d") is False  # never waits

    assert mailbox.dropped == 2
    assert take_queued(mailbox) == ["a", "b"]


# --- DROP_OLDEST -------------------------------------------------------------------


async def test_drop_oldest_makes_room_by_dropping_the_oldest_and_counts_it() -> None:
    mailbox = Mailbox(capacity=3, overflow=Overflow.DROP_OLDEST)
    for message in "abc":
        assert mailbox.send_nowait(message) is True
    assert mailbox.send_nowait("d") is True
    with trio.fail_after(1):
        assert await mailbox.send("e") is True

    assert mailbox.dropped == 2
    assert take_queued(mailbox) == ["c", "d", "e"]


# --- CONFLATE ----------------------------------------------------------------------


async def test_conflate_keeps_the_latest_per_key_in_its_place() -> None:
    mailbox = Mailbox(capacity=4, overflow=Overflow.CONFLATE, key=by_letter)
    mailbox.send_nowait(("a", 1))
    mailbox.send_nowait(("b", 1))
    mailbox.send_nowait(("c", 1))
    assert mailbox.send_nowait(("a", 2)) is True
    assert await mailbox.send(("b", 2)) is True
    mailbox.send_nowait(("a", 3))

    assert mailbox.dropped == 3  # each replacement counts
    assert take_queued(mailbox) == [("a", 3), ("b", 2), ("c", 1)]


async def test_conflate_a_new_key_on_a_full_mailbox_drops_the_oldest_key() -> None:
    mailbox = Mailbox(capacity=2, overflow=Overflow.CONFLATE, key=by_letter)
    mailbox.send_nowait(("a", 1))
    mailbox.send_nowait(("b", 1))
    mailbox.send_nowait(("c", 1))

    assert mailbox.dropped == 1
    assert take_queued(mailbox) == [("b", 1), ("c", 1)]


async def test_conflate_never_conflates_key_none() -> None:
    mailbox = Mailbox(capacity=4, overflow=Overflow.CONFLATE, key=by_letter)
    mailbox.send_nowait("tick")
    mailbox.send_nowait("tick")
    mailbox.send_nowait(("a", 1))
    mailbox.send_nowait("tick")

    assert mailbox.dropped == 0
    assert take_queued(mailbox) == ["tick", "tick", ("a", 1), "tick"]


async def test_conflate_key_none_on_a_full_mailbox_drops_the_oldest() -> None:
    mailbox = Mailbox(capacity=2, overflow=Overflow.CONFLATE, key=by_letter)
    mailbox.send_nowait("tick")
    mailbox.send_nowait(("a", 1))
    mailbox.send_nowait("tock")

    assert mailbox.dropped == 1
    assert take_queued(mailbox) == [("a", 1), "tock"]


def test_conflate_needs_a_key_function() -> None:
    with pytest.raises(ValueError, match="key function"):
        Mailbox(overflow=Overflow.CONFLATE)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Mailbox(capacity=0)


# --- every drop is counted -----------------------------------------------------------


@pytest.mark.parametrize(
    "overflow", [Overflow.DROP_NEWEST, Overflow.DROP_OLDEST, Overflow.CONFLATE]
)
async def test_every_drop_is_counted(overflow: Overflow) -> None:
    mailbox = Mailbox(capacity=5, overflow=overflow, key=lambda message: message)
    for message in range(12):
        mailbox.send_nowait(message)
    assert mailbox.dropped == 7
    assert len(take_queued(mailbox)) == 5


# Operations for the model check below: ("send", n) sends message n with key
# n % 3 (or None when n % 4 == 0), ("system", n) delivers a runtime message,
# ("take", k) receives up to k messages.
_operations = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 50)),
        st.tuples(st.just("system"), st.integers(0, 50)),
        st.tuples(st.just("take"), st.integers(1, 4)),
    ),
    max_size=60,
)


@given(
    overflow=st.sampled_from(list(Overflow)),
    capacity=st.integers(1, 5),
    operations=_operations,
)
def test_nothing_is_lost_without_being_counted(
    overflow: Overflow, capacity: int, operations: list[tuple[str, int]]
) -> None:
    """Every accepted message is received, still queued, or counted as dropped.

    Runtime messages (delivered with deliver_system) are never dropped, whatever
    the policy, and non-conflating policies keep FIFO order among what is kept.
    """

    def key(message: Any) -> Any:
        kind, number, _serial = message
        if kind == "system" or number % 4 == 0:
            return None
        return number % 3

    mailbox = Mailbox(capacity=capacity, overflow=overflow, key=key)
    accepted: list[Any] = []
    runtime: list[Any] = []
    received: list[Any] = []
    for serial, (operation, number) in enumerate(operations):
        match operation:
            case "send":
                message = ("user", number, serial)
                try:
                    mailbox.send_nowait(message)
                except MailboxFullError:
                    assert overflow in (Overflow.WAIT, Overflow.FAIL)
                    assert len(mailbox) >= capacity
                else:
                    accepted.append(message)
            case "system":
                message = ("system", number, serial)
                mailbox.deliver_system(message)
                runtime.append(message)
            case "take":
                for _ in range(number):
                    try:
                        received.append(mailbox.receive_nowait())
                    except trio.WouldBlock:
                        break
    received.extend(take_queued(mailbox))

    user_received = [message for message in received if message[0] == "user"]
    assert len(user_received) + mailbox.dropped == len(accepted)
    assert [message for message in received if message[0] == "system"] == runtime
    if overflow is not Overflow.CONFLATE:
        assert received == sorted(received, key=lambda message: message[2])
    if overflow in (Overflow.WAIT, Overflow.FAIL):
        assert mailbox.dropped == 0


# --- batched drain and order -----------------------------------------------------------


async def test_a_burst_is_taken_in_one_batch() -> None:
    mailbox = Mailbox(capacity=100)
    batches: list[list[int]] = []

    async def reader() -> None:
        while True:
            try:
                batches.append(await mailbox.receive_batch(max_messages=64))
            except trio.EndOfChannel:
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        # A burst: 10 messages without a checkpoint between them.
        for message in range(10):
            mailbox.send_nowait(message)
        await trio.testing.wait_all_tasks_blocked()
        assert batches == [list(range(10))], "the burst must cost one wake-up"

        for message in range(10, 13):
            mailbox.send_nowait(message)
        mailbox.close(actors.SHUTDOWN)

    assert batches == [list(range(10)), [10, 11, 12]]


async def test_a_batch_takes_at_most_max_messages_in_fifo_order() -> None:
    mailbox = Mailbox(capacity=100)
    for message in range(10):
        mailbox.send_nowait(message)

    assert await mailbox.receive_batch(max_messages=4) == [0, 1, 2, 3]
    assert await mailbox.receive_batch(max_messages=4) == [4, 5, 6, 7]
    assert await mailbox.receive() == 8
    assert await mailbox.receive_batch(max_messages=4) == [9]
    assert len(mailbox) == 0


async def test_a_full_wait_mailbox_lets_senders_in_after_a_batch() -> None:
    mailbox = Mailbox(capacity=3, overflow=Overflow.WAIT)
    async with trio.open_nursery() as nursery:
        for message in range(6):
            nursery.start_soon(mailbox.send, message)
            await trio.testing.wait_all_tasks_blocked()
        assert await mailbox.receive_batch() == [0, 1, 2]
        await trio.testing.wait_all_tasks_blocked()
        # The three waiting senders all got in; woken together, they run in
        # the scheduler's order, so their order among themselves is not fixed.
        assert sorted(await mailbox.receive_batch()) == [3, 4, 5]


async def test_an_actor_drains_its_mailbox_in_batches(system: actors.System) -> None:
    batches: list[list[Any]] = []
    go = trio.Event()

    async def batcher(ctx: actors.Context) -> None:
        ctx.ready()
        await go.wait()
        while True:
            batches.append(await ctx.receive_batch(max_messages=8))

    ref = await system.spawn(batcher)
    for message in range(20):
        ref.send_nowait(message)
    go.set()
    await trio.testing.wait_all_tasks_blocked()

    assert batches == [list(range(8)), list(range(8, 16)), list(range(16, 20))]


async def test_messages_from_one_sender_arrive_in_order(system: actors.System) -> None:
    received: list[Any] = []
    done = trio.Event()

    async def collect(ctx: actors.Context) -> None:
        async for message in ctx:
            received.append(message)
            if len(received) == 500:
                done.set()

    ref = await system.spawn(collect, mailbox_capacity=16)
    for message in range(500):
        await ref.send(message)  # backpressure: the mailbox holds 16
    await done.wait()
    assert received == list(range(500))


# --- close -----------------------------------------------------------------------------


async def test_close_lets_the_reader_drain_then_ends_the_channel() -> None:
    mailbox = Mailbox(capacity=4)
    for message in "abc":
        mailbox.send_nowait(message)
    mailbox.close(actors.SHUTDOWN)

    assert mailbox.closed
    assert await mailbox.receive() == "a"
    assert await mailbox.receive_batch() == ["b", "c"]
    with pytest.raises(trio.EndOfChannel):
        await mailbox.receive()
    with pytest.raises(trio.EndOfChannel):
        await mailbox.receive_batch()
    with pytest.raises(trio.EndOfChannel):
        mailbox.receive_nowait()


async def test_close_wakes_a_waiting_reader_with_end_of_channel() -> None:
    mailbox = Mailbox()
    async with trio.open_nursery() as nursery:

        async def reader() -> None:
            with pytest.raises(trio.EndOfChannel):
                await mailbox.receive_batch()

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        mailbox.close(actors.SHUTDOWN)


async def test_close_makes_waiting_senders_raise_actor_exited() -> None:
    mailbox = Mailbox(capacity=1, overflow=Overflow.WAIT, owner="worker#3")
    mailbox.send_nowait("queued")
    errors: list[ActorExitedError] = []

    async def sender(message: int) -> None:
        with pytest.raises(ActorExitedError) as caught:
            await mailbox.send(message)
        errors.append(caught.value)

    async with trio.open_nursery() as nursery:
        for message in range(3):
            nursery.start_soon(sender, message)
        await trio.testing.wait_all_tasks_blocked()
        assert errors == []
        mailbox.close(actors.SHUTDOWN)

    assert len(errors) == 3
    assert all(error.actor == "worker#3" and error.reason is actors.SHUTDOWN for error in errors)
    assert take_queued(mailbox) == ["queued"]  # nothing got in


@pytest.mark.parametrize("overflow", list(Overflow))
async def test_sending_to_a_closed_mailbox_raises_at_once(overflow: Overflow) -> None:
    mailbox = Mailbox(capacity=1, overflow=overflow, key=by_letter, owner="gone")
    mailbox.send_nowait("queued")  # full, so that a WAIT send would wait
    mailbox.close(actors.NORMAL)

    with pytest.raises(ActorExitedError, match="gone has exited"):
        mailbox.send_nowait("late")
    with trio.fail_after(1), pytest.raises(ActorExitedError):
        await mailbox.send("late")
    assert mailbox.dropped == 0


def test_closing_twice_keeps_the_first_reason() -> None:
    mailbox = Mailbox()
    mailbox.close(actors.NORMAL)
    mailbox.close(actors.SHUTDOWN)
    with pytest.raises(ActorExitedError) as caught:
        mailbox.send_nowait("x")
    assert caught.value.reason is actors.NORMAL


# --- runtime messages --------------------------------------------------------------------


@pytest.mark.parametrize("overflow", list(Overflow))
def test_runtime_messages_go_past_the_capacity(overflow: Overflow) -> None:
    mailbox = Mailbox(capacity=2, overflow=overflow, key=by_letter)
    mailbox.send_nowait(("a", 1))
    mailbox.send_nowait(("b", 1))
    mailbox.deliver_system("down")

    assert len(mailbox) == 3
    assert take_queued(mailbox) == [("a", 1), ("b", 1), "down"]
    assert mailbox.dropped == 0


@pytest.mark.parametrize("overflow", [Overflow.DROP_OLDEST, Overflow.CONFLATE])
def test_a_dropping_policy_never_drops_a_runtime_message(overflow: Overflow) -> None:
    mailbox = Mailbox(capacity=2, overflow=overflow, key=by_letter)
    mailbox.deliver_system("down")  # the oldest message in the mailbox
    for number in range(4):
        mailbox.send_nowait((f"k{number}", number))

    # The runtime message takes room, but the policy evicts around it.
    assert take_queued(mailbox) == ["down", ("k3", 3)]
    assert mailbox.dropped == 3


def test_a_closed_mailbox_ignores_runtime_messages() -> None:
    mailbox = Mailbox()
    mailbox.close(actors.NORMAL)
    mailbox.deliver_system("down")
    assert len(mailbox) == 0


async def test_remove_if_discards_matching_messages_and_lets_a_sender_in() -> None:
    mailbox = Mailbox(capacity=3, overflow=Overflow.WAIT)
    for message in (1, 2, 3):
        mailbox.send_nowait(message)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mailbox.send, 4)
        await trio.testing.wait_all_tasks_blocked()
        assert mailbox.remove_if(lambda message: message % 2 == 1) == 2
    assert take_queued(mailbox) == [2, 4]


class Stand(Delivery):
    """A delivery that stands in for `payload` and counts how often it is taken."""

    __slots__ = ("_payload", "taken")

    def __init__(self, payload: Any) -> None:
        self._payload = payload
        self.taken = 0

    @property
    def payload(self) -> Any:
        return self._payload

    def _taken(self) -> None:
        self.taken += 1


@pytest.mark.parametrize("overflow", list(Overflow))
@pytest.mark.parametrize("read", ["receive_nowait", "receive_batch"])
async def test_a_reader_gets_a_deliverys_payload_and_the_delivery_learns_it_was_taken(
    overflow: Overflow, read: str
) -> None:
    mailbox = Mailbox(capacity=1, overflow=overflow, key=by_letter)
    mailbox.send_nowait(("a", 1))
    stand = Stand("tick")
    mailbox.deliver_system(stand)  # past the capacity, like any runtime message
    with contextlib.suppress(MailboxFullError):
        mailbox.send_nowait(("b", 2))  # refused, or a policy drops around the delivery

    assert stand.taken == 0
    if read == "receive_nowait":
        received = take_queued(mailbox)
    else:
        received = await mailbox.receive_batch()
    assert "tick" in received
    assert stand not in received
    assert stand.taken == 1
    assert take_queued(mailbox) == []
    assert stand.taken == 1


def test_removing_or_clearing_a_delivery_tells_it_and_a_predicate_sees_its_payload() -> None:
    mailbox = Mailbox()
    kept, removed = Stand("keep"), Stand("drop")
    mailbox.deliver_system(kept)
    mailbox.deliver_system(removed)
    mailbox.send_nowait("drop")

    assert mailbox.remove_if(lambda message: message == "drop") == 2
    assert (kept.taken, removed.taken) == (0, 1)

    assert mailbox.clear() == 1
    assert (kept.taken, removed.taken) == (1, 1)
    assert take_queued(mailbox) == []


# --- mailbox settings of an actor --------------------------------------------------------


async def test_spec_settings_and_class_defaults_shape_an_actors_mailbox(
    system: actors.System,
) -> None:
    class Small(actors.Actor):
        mailbox_capacity = 3
        overflow = Overflow.DROP_NEWEST

        async def handle(self, message: Any) -> None:
            await trio.sleep_forever()  # never reads past the first message

    # shutdown=0: stuck in handle, they are cancelled at once when the system ends.
    by_class = await system.spawn(Small, shutdown=0)
    by_spec = await system.spawn(
        Small, shutdown=0, mailbox_capacity=5, overflow=Overflow.DROP_OLDEST
    )
    default = await system.spawn(idle)

    for ref in (by_class, by_spec):
        ref.send_nowait("first")
    await trio.testing.wait_all_tasks_blocked()  # each is now stuck in handle
    for ref in (by_class, by_spec):
        for message in range(8):
            ref.send_nowait(message)

    assert (by_class.mailbox_capacity, by_class.mailbox_depth, by_class.dropped) == (3, 3, 5)
    assert (by_spec.mailbox_capacity, by_spec.mailbox_depth, by_spec.dropped) == (5, 5, 3)
    assert default.mailbox_capacity == actors.DEFAULT_MAILBOX_CAPACITY


# --- scheduling ----------------------------------------------------------------


async def test_a_reader_that_waited_takes_its_message_in_the_pass_it_is_woken_in() -> None:
    passes: list[None] = []

    class Passes(trio.abc.Instrument):
        def after_io_wait(self, timeout: float) -> None:
            passes.append(None)

    mailbox = Mailbox(owner="reader")
    received: list[tuple[str, int]] = []

    async def reader() -> None:
        received.append((await mailbox.receive(), len(passes)))

    instrument = Passes()
    trio.lowlevel.add_instrument(instrument)
    try:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                sent_in = len(passes)
                mailbox.send_nowait("hello")
    finally:
        trio.lowlevel.remove_instrument(instrument)
    # Woken by the send, the reader runs in the next pass and returns there,
    # without yielding for another one.
    assert received == [("hello", sent_in + 1)]
