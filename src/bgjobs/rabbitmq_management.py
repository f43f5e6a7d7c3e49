"""RabbitMQ's management API, when ``BGJOBS_RABBITMQ__MANAGEMENT_URL`` names it: the one place
that counts a queue's unacknowledged messages (in flight, and the delayed ones workers hold)."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

from .errors import ConfigurationError
from .redact import mask_url

__all__ = ["Management"]


class Management:
    """RabbitMQ's management API (``rabbitmq_management``): each queue's ready and unacked counts."""

    def __init__(self, url: str, vhost: str) -> None:
        parts = urlsplit(url)
        self.auth = (parts.username or "guest", parts.password or "guest")
        netloc = parts.hostname or "127.0.0.1"
        if parts.port:
            netloc += f":{parts.port}"
        self.base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.shown = mask_url(url)
        self.vhost = vhost

    def counts(self) -> dict[str, tuple[int, int]]:
        """Queue name -> (ready, unacknowledged), for every queue of the vhost.

        Raises:
            ConfigurationError: the API does not answer, or refuses the credentials.
        """
        import httpx

        where = f"{self.base}/api/queues/{quote(self.vhost, safe='')}"
        try:
            answer = httpx.get(where, params={"columns": "name,messages_ready,messages_unacknowledged"},
                               auth=self.auth, timeout=5.0)  # fmt: skip
        except httpx.HTTPError as exc:
            raise ConfigurationError(
                f"cannot reach RabbitMQ's management API at {self.shown} ({type(exc).__name__}); is the "
                "rabbitmq_management plugin on? check BGJOBS_RABBITMQ__MANAGEMENT_URL"
            ) from None
        if answer.status_code != 200:
            raise ConfigurationError(
                f"RabbitMQ's management API at {self.shown} answered {answer.status_code}; check the user "
                "and password in BGJOBS_RABBITMQ__MANAGEMENT_URL (the user needs the monitoring tag)"
            )
        return {
            q["name"]: (int(q.get("messages_ready") or 0), int(q.get("messages_unacknowledged") or 0))
            for q in answer.json()
        }
