"""triohub: an Erlang-style actor hub for realtime services on trio.

`hub.protocol` is the sans-IO wire protocol (frames, codecs, per-connection
state machines); it imports nothing from the rest of the hub but `hub.errors`.
The gateway, connection actors, router and services build on it and on the
`actors` runtime. Import what you need from its own module; this package
imports nothing on purpose, so `import hub.protocol` stays free of trio.
"""
