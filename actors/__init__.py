"""actors: an Erlang/OTP-style actor runtime on trio.

Mailboxes, refs, behaviours, supervisors, monitors, links, timers, a registry
and process groups, for any supervised trio program. It knows nothing of sockets
or of the hub built on it. Start with `open_system`; see docs/actors.md.
"""

from .actor import NO_REPLY, Actor, Context
from .errors import (
    ActorError,
    ActorExitedError,
    CallTimeoutError,
    DuplicateChildError,
    LinkedActorExitedError,
    MailboxFullError,
    NameTakenError,
    NoSuchActorError,
    NoSuchChildError,
    RestartIntensityError,
    StartError,
    UnexpectedMessageError,
)
from .mailbox import DEFAULT_BATCH_SIZE, DEFAULT_MAILBOX_CAPACITY, Mailbox, Overflow
from .monitor import Down, Exit, Monitor, demonitor, link, monitor, unlink
from .ref import (
    DEFAULT_CALL_TIMEOUT,
    NORMAL,
    SHUTDOWN,
    ActorRef,
    Call,
    Crashed,
    ExitReason,
    Normal,
    Shutdown,
)
from .registry import Registry
from .supervisor import (
    DEFAULT_SHUTDOWN_SECONDS,
    Backoff,
    ChildInfo,
    ChildSpec,
    Restart,
    RestartBudget,
    Strategy,
    Supervisor,
)
from .system import CRASH_REPORTS_KEPT, ActorInfo, CrashReport, System, open_system
from .tables import compacted
from .timers import Timer, TimerService

__all__ = [
    "CRASH_REPORTS_KEPT",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_MAILBOX_CAPACITY",
    "DEFAULT_SHUTDOWN_SECONDS",
    "NORMAL",
    "NO_REPLY",
    "SHUTDOWN",
    "Actor",
    "ActorError",
    "ActorExitedError",
    "ActorInfo",
    "ActorRef",
    "Backoff",
    "Call",
    "CallTimeoutError",
    "ChildInfo",
    "ChildSpec",
    "Context",
    "CrashReport",
    "Crashed",
    "Down",
    "DuplicateChildError",
    "Exit",
    "ExitReason",
    "LinkedActorExitedError",
    "Mailbox",
    "MailboxFullError",
    "Monitor",
    "NameTakenError",
    "NoSuchActorError",
    "NoSuchChildError",
    "Normal",
    "Overflow",
    "Registry",
    "Restart",
    "RestartBudget",
    "RestartIntensityError",
    "Shutdown",
    "StartError",
    "Strategy",
    "Supervisor",
    "System",
    "Timer",
    "TimerService",
    "UnexpectedMessageError",
    "compacted",
    "demonitor",
    "link",
    "monitor",
    "open_system",
    "unlink",
]
