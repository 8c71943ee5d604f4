"""`shipdelay cockpit`: serve the cockpit on one address until interrupted."""

from __future__ import annotations

import errno
import logging
import os

from werkzeug.serving import make_server

from cockpit.app import create_app
from cockpit.money import Penalties
from shipdelay.settings import Settings


def make(settings: Settings, host: str = "127.0.0.1", port: int = 8050,
         service_url: str | None = None, follow_alerts: bool = True):
    """A threaded WSGI server of the cockpit (not started): `serve_forever()`, `shutdown()`.
    Raises OSError when the address is taken, ValueError when the penalties file is bad."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    Penalties.from_settings(settings)  # a bad penalties file is said before serving (ValueError)
    app = create_app(settings, service_url, follow_alerts=follow_alerts)
    try:
        return make_server(host, port, app.server, threaded=True)
    except SystemExit:  # werkzeug prints why to stderr and exits when it cannot bind
        raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE)) from None


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8050,
          service_url: str | None = None, say=print) -> None:
    server = make(settings, host, port, service_url)
    say(f"the cockpit is at http://{host}:{server.server_port}/ (Ctrl+C stops it)")
    if settings.api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        say(f"no API key is set: anyone who can reach {host} sees the cockpit; set "
            "SHIPDELAY_API_KEY to ask for it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        say("cockpit stopped")
    finally:
        server.server_close()
