"""The observer: a live look inside a running hub, as Erlang's observer gives of the BEAM.

Off unless the application (`Hub(observer=True)`) or the settings
(`admin.observer`, `hub serve --observer`) turn it on, and behind the admin
token when there is one (`hub.admin`). Then the hub serves:

- the `$observer` topic (`ObserverService`), joined over the hub's own
  protocol at `/observer/ws`, which pushes a `snapshot` event every
  `admin.observer_interval_seconds` to whoever watches: the supervision tree
  (each actor's mailbox, drops, restarts and state), the live topics (members
  and message rates), the connections (transport, topics, outbox) and the
  last crashes with their tracebacks (`snapshot.Snapshotter`);
- the page at `/observer/` that draws it in a browser (`page`);
- and `hub top URL` draws it in a terminal (`hub.top`).

docs/observer.md describes what is shown.
"""

from hub.observer.page import observer_routes
from hub.observer.service import (
    OBSERVER_TOPIC,
    OBSERVER_WS_PATH,
    ObserverIdentity,
    ObserverService,
    observer_authenticate,
)
from hub.observer.snapshot import MAX_CHILDREN, MAX_ROWS, Snapshotter

__all__ = [
    "MAX_CHILDREN",
    "MAX_ROWS",
    "OBSERVER_TOPIC",
    "OBSERVER_WS_PATH",
    "ObserverIdentity",
    "ObserverService",
    "Snapshotter",
    "observer_authenticate",
    "observer_routes",
]
