"""`hub bench`: the hub's benchmark tool, talking to a hub only over the wire.

Three kinds of process take part in a run, so that none measures itself:
the server (a hub, `hub serve MODULE:APP`, or a baseline from
benchmarks/baselines/), the load generator (`python -m hub.bench.loadgen`,
asyncio on uvloop with picows clients) and `hub bench` itself, which starts
the other two, reads the server's CPU time and memory from /proc through the
load generator, and reports.

- `cli`: the command, the runs (repeats interleaved across servers), output;
- `servers`: starting and stopping the hub and the baselines;
- `spec`: what one load-generator run is told (a frozen value, sent as JSON);
- `loadgen`: the load generator's process; `scenarios`: what it plays;
- `clients`: its WebSocket connections; `wire`: the hub frames it packs;
- `procstat`: /proc readings; `stats`: percentiles and summaries;
- `report`: tables, JSON and the plot; `progress`: the progress bar.

Nothing here imports the hub's runtime: only `hub.protocol`'s constants.
"""

from hub.bench.cli import main

__all__ = ["main"]
