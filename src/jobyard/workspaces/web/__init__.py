"""The platform's web parts: its JSON routes, its dashboard panel and their templates.

Kept apart from the rest of `jobyard.workspaces` because they need the `server` extra (FastAPI,
Jinja2), which the platform's services, executors and store do not: `jobyard worker` runs the
platform without them. The package's `__init__` never imports this one.
"""
