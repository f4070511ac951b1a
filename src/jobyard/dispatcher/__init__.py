"""The dispatcher and its parts: executors, attempts, hooks, limits, leadership, completion,
maintenance."""

from jobyard.dispatcher.dispatcher import Dispatcher
from jobyard.dispatcher.executor import Executor, JobContext
from jobyard.dispatcher.limits import Limits

__all__ = ["Dispatcher", "Executor", "JobContext", "Limits"]
