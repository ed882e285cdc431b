"""The read side: projections that turn the feed of events into read models, exactly once, run by
uWSGI mules (``mule = %b-es-mule.py``) or by ``uwsgi-es project NAME``.

- ``Projection`` (``projection``): what a projection is, which events it handles, and what
  "exactly once" covers;
- ``tracking``: the position each projection has applied, in the store's own database, and what
  keeps it from going on (stopped at an event, or a runner that cannot run);
- ``ProjectionRunner`` (``runner``): catch up, then follow the feed; pass over the events it does
  not handle; stop at a failing event; record why it cannot run when the database keeps failing;
- ``waking``: PostgreSQL LISTEN/NOTIFY or SQLite's data_version, bounded by polling;
- ``status``: positions, lags, stops, missing read-model tables and runners that cannot run, for
  ``/ready`` and ``/worker``; reads that wait for a position (read your writes) and never answer
  500 for the database;
- ``operations``: the operators' day-2 commands (``uwsgi-es status``, ``park``, ``replay``,
  ``reset``), each under the tracking record's lock, so it falls between two of a runner's batches;
- ``rebuild``: ``uwsgi-es rebuild``, a new read model filled beside the live one and switched in
  one transaction when it has caught up (blue-green);
- ``mule``: the uWSGI entry point.

The rule: projections and their runner sit on the core and the stores (a global feed, a
transactional store); only ``mule`` (the uWSGI entry point) imports ``lifecycle`` and ``servers``.
The web layer reads ``status``; nothing here imports the web layer, and nothing runs in a worker
except the bounded wait of a read that asks for a position.
"""

from __future__ import annotations

from uwsgi_es.readside.projection import Projection
from uwsgi_es.readside.runner import ProjectionRunner
from uwsgi_es.readside.status import projected

__all__ = ["Projection", "ProjectionRunner", "projected"]
