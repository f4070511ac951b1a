"""Failpoints: make a process die (or freeze) at a named point, on purpose.

For fault-injection tests of your own deployment and ours: the worst moments of a job's life
(just claimed, work done but not recorded, result being written) are hit every time rather than
by luck. Off unless `JOBYARD_FAILPOINTS` is set, for example

    JOBYARD_FAILPOINTS="after_effect=kill@0.05,before_complete=stop"

Each entry is `point=action[@probability]`. Actions: `kill` (SIGKILL this process), `stop`
(SIGSTOP: frozen until SIGCONT), `raise` (raise FailpointError at that point). Points:
`after_claim` (jobs claimed, none started), `after_effect` (an executor returned, its result not
yet queued), `before_complete` (results about to be written).
"""

from __future__ import annotations

import os
import random
import signal
from typing import Final

from jobyard.model import ConfigError, JobyardError

__all__ = ["POINTS", "FailpointError", "check", "hit"]

POINTS: Final = ("after_claim", "after_effect", "before_complete")
_ACTIONS: Final = ("kill", "stop", "raise")


class FailpointError(JobyardError):
    """Raised by a failpoint set to `raise`."""


def _parse(spec: str) -> dict[str, tuple[str, float]]:
    points: dict[str, tuple[str, float]] = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        name, _, action = entry.partition("=")
        action, _, chance = action.partition("@")
        if name not in POINTS or action not in _ACTIONS:
            raise ConfigError(
                f"JOBYARD_FAILPOINTS: bad entry {entry!r}; points are {', '.join(POINTS)}, "
                f"actions {', '.join(_ACTIONS)}"
            )
        try:
            probability = float(chance) if chance else 1.0
        except ValueError:
            raise ConfigError(f"JOBYARD_FAILPOINTS: bad probability in {entry!r}") from None
        points[name] = (action, probability)
    return points


_active: dict[str, tuple[str, float]] | None = None


def check() -> dict[str, tuple[str, float]]:
    """Read `JOBYARD_FAILPOINTS` once; raises ConfigError (here, not at import) when bad."""
    global _active
    if _active is None:
        _active = _parse(os.environ.get("JOBYARD_FAILPOINTS", ""))
    return _active


def hit(point: str) -> None:
    """Fire `point` if it is armed (a dictionary lookup when nothing is)."""
    active = _active if _active is not None else check()
    if not active:
        return
    armed = active.get(point)
    if armed is None or random.random() >= armed[1]:
        return
    action = armed[0]
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
    else:
        raise FailpointError(f"failpoint {point} fired")
