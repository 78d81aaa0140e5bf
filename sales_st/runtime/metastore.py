"""The catalog's metastore: the embedded Derby database (one job at a time) or a metastore
service that several jobs share (``scripts/metastore.sh start``, ``spark.metastore_uri``).

Embedded Derby admits one JVM; a second job would fail deep inside Hive with a 63k-line log.
:func:`hold_embedded_lock` takes an exclusive file lock next to the database first, so the
second job stops at once with one line naming the lock and the fix.  The operating system
releases the lock when the process ends, killed or not.
"""

from __future__ import annotations

import fcntl
import os
from typing import IO

from sales_st.config import Config
from sales_st.errors import DataError

_HELD: dict[str, IO[str]] = {}  # lock path -> open file, for the life of this process


class MetastoreBusyError(DataError):
    """Another process holds the embedded metastore.  Jobs exit 1."""


def lock_path(cfg: Config) -> str:
    return f"{cfg.path('metastore')}.lock"


def hold_embedded_lock(cfg: Config) -> str | None:
    """Lock the embedded metastore for this process (no-op with a metastore service or a
    remote data directory); returns the lock file's path."""
    if cfg.spark.metastore_uri or "://" in cfg.data_dir:
        return None
    path = lock_path(cfg)
    if path in _HELD:
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fh = open(path, "a+")  # held open until the process ends
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        owner = fh.read().strip() or "unknown"
        fh.close()
        raise MetastoreBusyError(
            f"the embedded metastore {cfg.path('metastore')} is in use by another job "
            f"(pid {owner}; lock {path}): wait for it to finish, or start the metastore "
            "service (scripts/metastore.sh start) and run every job with "
            "spark.metastore_uri=thrift://127.0.0.1:9083"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    _HELD[path] = fh
    return path
