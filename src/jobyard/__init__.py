"""jobyard: durable background jobs for Python, on SQLite or PostgreSQL.

The public API. Everything else is internal and may change.
"""

from jobyard.admin import JobAction, JobAdmin
from jobyard.config import Config
from jobyard.dispatcher import Dispatcher, Executor, JobContext, Limits
from jobyard.model import (
    ConfigError,
    Job,
    JobNotFound,
    JobStatus,
    JobyardError,
    NotFound,
    PayloadError,
    PayloadTooLarge,
    PermanentError,
    Snooze,
    StoreError,
    StoreUnavailable,
    UnknownJobType,
)
from jobyard.node import run_node
from jobyard.queue import Queue
from jobyard.status import ClusterStatus, cluster_status
from jobyard.store import Store, open_store
from jobyard.store.records import JobFilter, Outcome

__all__ = [
    "ClusterStatus",
    "Config",
    "ConfigError",
    "Dispatcher",
    "Executor",
    "Job",
    "JobAction",
    "JobAdmin",
    "JobContext",
    "JobFilter",
    "JobNotFound",
    "JobStatus",
    "JobyardError",
    "Limits",
    "NotFound",
    "Outcome",
    "PayloadError",
    "PayloadTooLarge",
    "PermanentError",
    "Queue",
    "Snooze",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "UnknownJobType",
    "cluster_status",
    "open_store",
    "run_node",
]

__version__ = "0.1.0"
