"""What Linux says about a process: CPU seconds, resident memory, the file limit.

Read from /proc, so it works for any process on this machine (the server the
benchmark spawned, or one named with --server-pid) without its cooperation.
A server may be several processes (`hub serve --workers N`: a parent and its
workers): `family` finds them, `connections` counts each one's sockets.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from pathlib import Path
from typing import Final

_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of `pid` (all its threads), in seconds.

    From /proc/<pid>/stat (utime and stime, in clock ticks: 10 ms here), so
    measure over windows of a second or more. Raises OSError if `pid` is gone.
    """
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    # The command name (field 2) is in parentheses and may hold spaces or
    # parentheses itself; the fields after the last ')' are plain numbers.
    fields = text.rpartition(")")[2].split()
    # fields[0] is field 3 (state), so utime (field 14) is fields[11].
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def children(pid: int) -> set[int]:
    """The live child processes of `pid`, whichever of its threads started them.

    From /proc/<pid>/task/*/children; an empty set if `pid` is gone.
    """
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.update(int(child) for child in task.read_text().split())
        except FileNotFoundError:
            continue  # the thread has just ended
    return found


def family(pid: int) -> list[int]:
    """`pid` and all its descendants, parents before their children."""
    found = [pid]
    for parent in found:  # grows as it goes: breadth first
        found.extend(sorted(children(parent) - set(found)))
    return found


def cpu_seconds_each(pids: Iterable[int]) -> dict[int, float]:
    """Each live process's CPU seconds (`cpu_seconds`); a process gone meanwhile is left out."""
    found = {}
    for pid in pids:
        try:
            found[pid] = cpu_seconds(pid)
        except OSError:
            continue  # it ended between being listed and being read
    return found


# /proc/net/tcp's state column: an established connection, a listening socket.
ESTABLISHED: Final = "01"
LISTENING: Final = "0A"


def _socket_inodes(pid: int, port: int, state: str) -> set[str]:
    """The inodes of TCP sockets on local `port` in `state`, seen from `pid`."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            # fields: sl, local address:port (hex), remote, st, queues, tr, retrnsmt, uid,
            # timeout, inode
            if int(fields[1].rpartition(":")[2], 16) == port and fields[3] == state:
                inodes.add(fields[9])
    return inodes


def connections(pids: Iterable[int], port: int, state: str = ESTABLISHED) -> dict[int, int]:
    """How many TCP connections to local `port` each process holds (with LISTENING: sockets).

    A socket is a process's when one of its file descriptors is that socket
    (/proc/<pid>/fd); reading them needs the same user as the process. A
    process gone meanwhile is left out.
    """
    pids = list(pids)
    if not pids:
        return {}
    inodes = _socket_inodes(pids[0], port, state)
    counts = {}
    for pid in pids:
        held = 0
        try:
            for fd in os.scandir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(fd.path)
                except OSError:
                    continue  # closed between listing and reading
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    held += 1
        except FileNotFoundError:
            continue
        counts[pid] = held
    return counts


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` (VmRSS in /proc/<pid>/status), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS line in /proc/{pid}/status (a zombie?)")


def raise_file_limit() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to its hard limit; return it.

    Children started afterwards inherit the raised limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        # Linux caps open files at fs.nr_open whatever the limit says.
        with open("/proc/sys/fs/nr_open") as nr_open:
            hard = int(nr_open.read())
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
