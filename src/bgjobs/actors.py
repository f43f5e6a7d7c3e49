"""The worker entry module: ``dramatiq bgjobs.actors``.

Importing it builds the broker from settings and declares every actor. It is
the only bgjobs module that does anything at import.
"""

from .worker import boot

broker = boot()
