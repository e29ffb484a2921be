"""Which hooks may wait: only those are run under a cancel scope (hub.topics.hooks)."""

from __future__ import annotations

import functools
from typing import Any

import trio

from hub.services.echo import EchoService
from hub.topics.hooks import may_wait


class _Hooks:
    async def answers_at_once(self, value: int) -> int:
        return value * 2

    async def sleeps(self) -> None:
        await trio.sleep(1)

    async def uses_async_with(self, lock: trio.Lock) -> None:
        async with lock:
            pass

    async def uses_async_for(self, items: Any) -> list[Any]:
        return [item async for item in items]

    async def loops_async_for(self, items: Any) -> None:
        async for _item in items:
            pass

    def returns_a_coroutine(self) -> Any:
        return self.sleeps()


def test_a_coroutine_with_no_await_cannot_wait() -> None:
    hooks = _Hooks()
    assert not may_wait(hooks.answers_at_once)
    assert not may_wait(_Hooks.answers_at_once)
    assert not may_wait(EchoService.handle_call)


def test_await_async_with_and_async_for_may_wait() -> None:
    hooks = _Hooks()
    for hook in (hooks.sleeps, hooks.uses_async_with, hooks.uses_async_for, hooks.loops_async_for):
        assert may_wait(hook), hook


def test_anything_that_is_not_a_coroutine_function_is_assumed_to_wait() -> None:
    hooks = _Hooks()
    assert may_wait(hooks.returns_a_coroutine)
    assert may_wait(functools.partial(hooks.answers_at_once, 1))
    assert may_wait(object())
