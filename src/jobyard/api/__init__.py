"""The HTTP service: the seed's Handler (a JSON API), metrics and a live dashboard."""

from jobyard.api.app import create_app
from jobyard.api.server import serve_app
from jobyard.api.settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "serve_app"]
