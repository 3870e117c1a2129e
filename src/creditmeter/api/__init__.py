"""The HTTP API: ``create_app(engine)`` gives the ASGI app ``creditmeter serve`` runs."""

from creditmeter.api.app import app_from_env, create_app

__all__ = ["app_from_env", "create_app"]
