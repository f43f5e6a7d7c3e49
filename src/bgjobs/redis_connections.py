"""Every Redis connection bgjobs makes comes from here: plain, over TLS, or through Sentinel.

The broker (and through it the consumers, maintenance, wake lists, coordination, the scheduler's
lock, status and the console) and the metrics collector each used to call ``from_url`` on their
own, so a Sentinel deployment had no way in and TLS had no settings. Now there is one function,
:func:`client_for`, and one place that explains a failed connection (:func:`explain`).

URLs:

- ``redis://[:password@]host:port/db``, ``unix:///path/redis.sock?db=0``;
- ``rediss://...``: TLS, with ``BGJOBS_REDIS_TLS__*`` (CA file, client certificate and key, the
  verification mode);
- ``redis+sentinel://[:password@]host:port[,host:port...]/service_name/db``: the master of
  ``service_name`` as the sentinels name it, found again after a failover; ``rediss+sentinel://``
  for TLS to both. The password is the master's (and the sentinels', unless
  ``?sentinel_password=`` says otherwise).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from .errors import ConfigurationError
from .redact import mask_url
from .redis_sections import RedisTlsSettings

__all__ = ["SCHEMES", "client_for", "explain", "explain_for", "is_redis_url", "sentinel_parts"]

SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "rediss+sentinel://")
#: Every connection gives up on a socket after this long, so a dead master is noticed (and a
#: Sentinel failover followed) in seconds rather than at the kernel's TCP timeout.
SOCKET_TIMEOUT_S = 10.0


def is_redis_url(url: str) -> bool:
    return url.startswith(SCHEMES)


def _tls(url: str, tls: RedisTlsSettings) -> dict[str, Any]:
    secure = url.startswith(("rediss://", "rediss+sentinel://"))
    configured = tls.ca_file or tls.cert_file or tls.key_file
    if not secure:
        if configured:
            raise ConfigurationError(
                f"BGJOBS_REDIS_TLS__* is set but {mask_url(url)} is not TLS: use rediss:// "
                "(or rediss+sentinel://), or unset the TLS settings"
            )
        return {}
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigurationError("BGJOBS_REDIS_TLS__CERT_FILE and __KEY_FILE go together (mutual TLS)")
    found: dict[str, Any] = {"ssl_cert_reqs": tls.verify}
    if tls.ca_file:
        found["ssl_ca_certs"] = tls.ca_file
    if tls.cert_file:
        found.update(ssl_certfile=tls.cert_file, ssl_keyfile=tls.key_file)
    if tls.verify == "none":
        found["ssl_check_hostname"] = False
    return found


def sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, int, str | None, str | None]:
    """``(sentinels, service_name, db, password, sentinel_password)`` of a Sentinel URL.

    Raises:
        ConfigurationError: the URL does not name sentinels and a service (password masked).
    """
    parts = urlsplit(url)
    where = parts.netloc.rsplit("@", 1)
    hosts = where[-1]
    password = unquote(where[0].split(":", 1)[-1]) if len(where) == 2 else None
    path = [p for p in parts.path.split("/") if p]
    example = "redis+sentinel://[:password@]host:26379[,host:26379]/mymaster/0"
    try:
        sentinels = []
        for item in hosts.split(","):
            host, _, port = item.rpartition(":")
            sentinels.append((host.strip("[]") or "localhost", int(port)))
        service, db = path[0], int(path[1]) if len(path) > 1 else 0
    except (ValueError, IndexError):
        raise ConfigurationError(f"{mask_url(url)} is not a Sentinel URL: {example}") from None
    query = parse_qs(parts.query)
    sentinel_password = query.get("sentinel_password", [None])[0] or password
    return sentinels, service, db, password or None, sentinel_password


#: Why no master was found, as :class:`_Sentinel` adds it to redis-py's error (:func:`explain`).
FAILOVER, UNKNOWN_SERVICE = "[a failover is in progress]", "[no sentinel knows the service]"


# redis-py typed Sentinel only in 8.x: through Any, so `mypy --strict` passes on 5.x to 8.x alike.
_SentinelBase: Any = Sentinel


class _Sentinel(_SentinelBase):  # type: ignore[misc]
    """Sentinel, whose "no master found" says why: the sentinels know the service and see its
    master down (a failover in progress: a send may be retried in seconds), or none of those that
    answer knows the service (a wrong name). redis-py's error is the same for both."""

    def discover_master(self, service_name: str) -> Any:
        try:
            return super().discover_master(service_name)
        except redis.sentinel.MasterNotFoundError as exc:
            known = answered = False
            for sentinel in self.sentinels:  # asked again only on this failure path
                try:
                    known = known or service_name in sentinel.sentinel_masters()
                    answered = True
                except redis.RedisError:
                    continue
            why = FAILOVER if known else UNKNOWN_SERVICE if answered else ""
            raise redis.sentinel.MasterNotFoundError(f"{exc} {why}".strip()) from None


def client_for(url: str, tls: RedisTlsSettings | None = None) -> redis.Redis:
    """A Redis client for ``url`` with the TLS settings applied; for Sentinel, the service's master.

    Raises:
        ConfigurationError: a malformed Sentinel URL, or TLS settings beside a URL without TLS.
    """
    tls_kwargs = _tls(url, tls or RedisTlsSettings())
    common: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT_S, "socket_connect_timeout": 5.0,
                              "health_check_interval": 30}  # fmt: skip
    if url.startswith(("redis+sentinel://", "rediss+sentinel://")):
        sentinels, service, db, password, sentinel_password = sentinel_parts(url)
        ssl = {"ssl": True, **tls_kwargs} if tls_kwargs else {}
        # redis-py typed Sentinel only in 8.x: through Any, so `mypy --strict` passes on 5.x to 8.x
        # alike, with no `type: ignore` that one of them reports as unused.
        sentinel = _Sentinel(
            sentinels, sentinel_kwargs={"password": sentinel_password, "socket_timeout": 2.0, **ssl},
            password=password, **common, **ssl,
        )  # fmt: skip
        master: redis.Redis = sentinel.master_for(service, db=db)
        return master
    return redis.Redis.from_url(url, **common, **tls_kwargs)


_REFUSED_LOGIN = (
    "ACCESS_REFUSED", "ProbableAuthenticationError", "AuthenticationError", "ProbableAccessDenied",
)  # fmt: skip


def explain_for(exc: BaseException, broker_url: str, coordination_url: str | None) -> str:
    """:func:`explain` for a deployment: on RabbitMQ, a Redis error is its coordination store's."""
    redis_error = isinstance(exc, redis.RedisError)
    if redis_error and coordination_url and not is_redis_url(broker_url):
        store = "the coordination store"
        return explain(exc, coordination_url, setting="BGJOBS_COORDINATION_URL", what=store)
    return explain(exc, broker_url)


def explain(
    exc: BaseException, url: str, *, setting: str = "BGJOBS_BROKER_URL", what: str = "the broker"
) -> str:
    """One line for a failed broker connection (Redis or RabbitMQ): what happened and which setting
    fixes it, the URL's password masked."""
    cause = exc.__cause__ or getattr(exc, "cause", None) or (exc.args[0] if exc.args else None)
    named = f"{type(exc).__name__} {type(cause).__name__ if cause is not None else ''} {exc!r} {cause!r}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    shown = mask_url(url)
    if url.startswith(("amqp://", "amqps://")):
        if any(marker in named for marker in _REFUSED_LOGIN):
            return (f"RabbitMQ at {shown} refused the login; check the user and password in "
                    "BGJOBS_BROKER_URL (and that the user may use its virtual host)")  # fmt: skip
        what = type(cause or exc).__name__
        return f"cannot reach RabbitMQ at {shown} ({what}); is it running? check BGJOBS_BROKER_URL"
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return (f"the Redis server at {shown} presented a certificate this process does not trust ({text}); "
                "set BGJOBS_REDIS_TLS__CA_FILE to the CA that signed it")  # fmt: skip
    if FAILOVER in text:
        return (f"the sentinels at {shown} see the master down and no replica promoted yet: a failover is "
                "in progress; the send may be retried in a few seconds")  # fmt: skip
    if UNKNOWN_SERVICE in text:
        return f"no sentinel at {shown} knows that service; check the service name in {setting}"
    if "No master found" in text or type(exc).__name__ == "MasterNotFoundError":
        return (f"no sentinel at {shown} answers ({text}); are they running? check {setting}")  # fmt: skip
    return f"cannot reach {what} at {shown} ({text}); is it running? check {setting}"
