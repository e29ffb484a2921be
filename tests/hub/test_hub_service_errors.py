"""The errors a service raises take their arguments in one order: the message, then code=."""

from __future__ import annotations

import pytest

from hub import JoinRefusedError, ServiceError
from hub.errors import ErrorCode


def test_both_take_the_message_first_and_the_code_by_keyword() -> None:
    refused = JoinRefusedError("the lobby is full", code="lobby_full")
    failed = ServiceError("that message has a banned word", code="moderated")
    assert (refused.message, refused.code) == ("the lobby is full", "lobby_full")
    assert (failed.message, failed.code) == ("that message has a banned word", "moderated")
    assert str(refused) == "the lobby is full"
    assert repr(failed) == "ServiceError('that message has a banned word', code='moderated')"


def test_each_has_a_default_code() -> None:
    assert JoinRefusedError("no").code == ErrorCode.JOIN_REFUSED
    assert ServiceError("no").code == ErrorCode.SERVICE_ERROR


@pytest.mark.parametrize("error", [ServiceError, JoinRefusedError])
def test_a_code_given_by_position_is_refused_rather_than_swapped(error: type) -> None:
    with pytest.raises(TypeError):
        error("moderated", "that message has a banned word")
