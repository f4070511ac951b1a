"""What a template may hold, and the error for one that holds something else.

A template may come from a third party, so nothing in it is trusted to stay inside the templates
folder or inside the workspace built from it.
"""

from __future__ import annotations

from jobyard.model import PermanentError

__all__ = ["TemplateRefused"]


class TemplateRefused(PermanentError):
    """The template holds something that could lead a build outside the templates folder or the
    workspace. Retrying cannot help until the template is fixed, so the job fails without using
    up its attempts; fix the template, then retry the job."""
