"""Read replicas on other machines through NATS JetStream (the ``aiolmdb[nats]`` extra).

A :class:`Publisher` publishes the change log of a leader environment
(``aiolmdb.open(path, changelog=True)``) to a JetStream stream, one message per commit; a
:class:`Replica` on any machine applies them, one write transaction per commit, to an
environment of its own that takes reads only. See the replication guide.

The ``nats-py`` package is imported only when a Publisher or Replica starts.
"""

from __future__ import annotations

from ..errors import FencedError, InvalidMessageError, ReadOnlyError, ReplicationError
from .publisher import Publisher
from .replica import Replica, replica_status, stream_status

__all__ = [
    "FencedError",
    "InvalidMessageError",
    "Publisher",
    "ReadOnlyError",
    "Replica",
    "ReplicationError",
    "replica_status",
    "stream_status",
]
