"""The web console (``/console``): a user's usage management page and an enterprise admin's page.

Server-rendered pages over the same engine calls as the HTTP API, signed in with an account key
(or the operator's). See docs/console.md.
"""

from creditmeter.console.routes import create_console

__all__ = ["create_console"]
