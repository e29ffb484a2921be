"""What Linux says about a process: CPU seconds, resident memory, the file limit.

Read from /proc, so it works for any process on this machine (the server the
benchmark spawned, or one named with --server-pid) without its cooperation.
"""

from __future__ import annotations

import os
import resource
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
