"""The web dashboard, its JSON API, ``/metrics`` and the self-contained run report.

Beside ``cli/`` in the layers: it builds its JSON from the same documents as ``--json``
(``cli/documents.py``, ``cli/run_show.py``), so a script can move between the two. The server
needs the ``web`` extra (Starlette and uvicorn); the report and the charts need nothing more
than the package itself.
"""

from __future__ import annotations

import importlib.util

#: The packages of ``pip install merlin_tracking[web]``.
WEB_PACKAGES = ("starlette", "uvicorn")
INSTALL_HINT = 'pip install "merlin_tracking[web]"'


def missing_packages() -> list[str]:
    """The server's packages that are not installed (none when the extra is)."""
    return [name for name in WEB_PACKAGES if importlib.util.find_spec(name) is None]
