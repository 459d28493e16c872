"""A local stand-in for the Azure services aitk talks to, for tests that drive the real SDK clients.

`FakeAzure` is one HTTPS server on 127.0.0.1 (self-signed CA made at start) that answers the REST
calls the Azure provider makes: Entra ID tokens (client secret and device code), ARM (resource
groups, storage accounts + file shares, Log Analytics workspaces, Container Apps environments,
storages, jobs, secrets, start/stop/executions, replicas, auth tokens, long-running operations),
the Container Apps log stream, the Log Analytics query API and the Azure Files data plane.
Faults are injected per request pattern (429 + Retry-After, 500, 401 expired token, ...).
"""

import contextlib
import os

from .server import FakeAzure, Fault

__all__ = ["FakeAzure", "Fault", "running"]


@contextlib.contextmanager
def running(folder, **kwargs):
    """A started FakeAzure with the environment pointing at it; both undone afterwards."""
    server = FakeAzure(folder, **kwargs).start()
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
