"""The HTTP service: a JSON API, metrics and a live dashboard, and the seam
through which applications built on the engine add their own routes and panels."""

from jobyard.api.app import create_app
from jobyard.api.extensions import Extension, FormRefused, Panel
from jobyard.api.server import serve_app
from jobyard.api.settings import ServerSettings

__all__ = ["Extension", "FormRefused", "Panel", "ServerSettings", "create_app", "serve_app"]
