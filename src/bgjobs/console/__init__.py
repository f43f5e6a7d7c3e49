"""The operations console: a JSON API under ``/api/v1`` and a web dashboard, one ASGI app.

``bgjobs.console.create_app()`` mounts in a host app (Starlette, FastAPI, Django's ASGI; Flask and
other WSGI apps through ``bgjobs.console.wsgi_app()``), and ``bgjobs console`` serves it on its
own. Needs the ``console`` extra (``pip install 'bgjobs[console]'``). See docs/console.md.
"""

from ._app import create_app
from ._security import Authorize
from ._wsgi import wsgi_app

__all__ = ["Authorize", "create_app", "wsgi_app"]
