"""Which service hooks can wait: a hook that never awaits runs without a cancel scope.

A topic bounds every hook it runs (its hook timeout, a Call's deadline) with
a trio cancel scope, which costs about 5 us to enter and leave: as much as
the rest of a Call's handling in the topic. But a cancel scope can only
cancel a coroutine at a checkpoint, and a coroutine function whose code has
no `await`, `async with` or `async for` has none: it runs to its end in one
step, whatever its scope. Such a hook (an echo, a counter, most `authorize`
checks) runs unbounded at no loss, and the scope is kept for the rest.

A coroutine suspends only at a yield in its own code (every `await`
compiles to one), so its code object tells: no yield, no suspension. A
function that is not itself a coroutine function (a wrapper returning an
awaitable, a partial) may return anything that waits: it is assumed to.
"""

from __future__ import annotations

import dis
import functools
import inspect
from types import CodeType
from typing import Any, Final

__all__ = ["may_wait"]

# The instructions a coroutine suspends at, or that lead to one (named as
# CPython 3.11 to 3.14 do; a name a version lacks is skipped).
_SUSPENDING: Final = frozenset(
    dis.opmap[name]
    for name in (
        "YIELD_VALUE",
        "SEND",
        "GET_AWAITABLE",
        "GET_AITER",
        "GET_ANEXT",
        "BEFORE_ASYNC_WITH",
    )
    if name in dis.opmap
)


def may_wait(function: Any) -> bool:
    """Whether calling `function` and awaiting the result may reach a checkpoint."""
    code = getattr(getattr(function, "__func__", function), "__code__", None)
    if not isinstance(code, CodeType):
        return True
    return _code_may_wait(code)


@functools.cache
def _code_may_wait(code: CodeType) -> bool:
    if not code.co_flags & inspect.CO_COROUTINE:
        return True  # it returns an awaitable made elsewhere
    return any(instruction.opcode in _SUSPENDING for instruction in dis.get_instructions(code))
