"""jobyard: durable background jobs for Python, on SQLite or PostgreSQL.

The public API. Everything else is internal and may change.
"""

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
from jobyard.store.base import JobFilter
from jobyard.workspaces.executors import SessionInitExecutor, WorkspaceInitExecutor
from jobyard.workspaces.payloads import (
    JOB_TYPE_SESSION_INIT,
    JOB_TYPE_WORKSPACE_INIT,
    SessionInitPayload,
    WorkspaceInitPayload,
)

__all__ = [
    "JOB_TYPE_SESSION_INIT",
    "JOB_TYPE_WORKSPACE_INIT",
    "ClusterStatus",
    "Config",
    "ConfigError",
    "Dispatcher",
    "Executor",
    "Job",
    "JobContext",
    "JobFilter",
    "JobNotFound",
    "JobStatus",
    "JobyardError",
    "Limits",
    "NotFound",
    "PayloadError",
    "PayloadTooLarge",
    "PermanentError",
    "Queue",
    "SessionInitExecutor",
    "SessionInitPayload",
    "Snooze",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "UnknownJobType",
    "WorkspaceInitExecutor",
    "WorkspaceInitPayload",
    "cluster_status",
    "open_store",
    "run_node",
]

__version__ = "0.1.0"
