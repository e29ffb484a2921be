"""`python -m hub` and the `hub` command.

`hub serve` first starts itself again on glibc's allocator (`hub.allocator`),
before it loads the hub: so that it can give memory back after a mass leave.
"""

import sys


def main() -> int:
    """Run the `hub` command with the process's arguments; return its exit status."""
    from hub.allocator import run_on_system_allocator

    run_on_system_allocator(sys.argv[1:])  # returns only when not starting again
    from hub.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
