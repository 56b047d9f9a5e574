"""The hub operator's web console: a server-rendered FastAPI app on the hub's store.

Modules, one concept each:

* :mod:`hub.web.db`        — the console's own connection and tables (same database as ``hub/store.py``)
* :mod:`hub.web.accounts`  — users, argon2 password hashes, sessions, login rate limiting
* :mod:`hub.web.reviews`   — review state per result and the append-only audit log
* :mod:`hub.web.inbox`     — filters, keyset paging and CSV rows over the ``results`` table
* :mod:`hub.web.assignments` — who works a result (or every frame of an exam), audited
* :mod:`hub.web.health`    — device health from the heartbeat (disk, temperature, power, model, source)
* :mod:`hub.web.provisioned` — the provisioning list (``[console] devices_file``): devices that never connected
* :mod:`hub.web.fhir`      — a result (one ``Observation`` per class) or an exam (one per frame) as a FHIR R4
  ``DiagnosticReport``
* :mod:`hub.web.security`  — cookies, CSRF tokens, security headers
* :mod:`hub.web.app`       — the FastAPI application (pages, SSE, exports)
* :mod:`hub.web.cli`       — ``python -m hub web`` and ``python -m hub user add/disable/list``

See docs/web.md.
"""

DISCLAIMER = "Decision support only — not a diagnosis"
