"""The settings of Redis deployments: TLS (``BGJOBS_REDIS_TLS__*``) and replication
(``BGJOBS_REDIS__*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .sections import Section

__all__ = ["RedisSettings", "RedisTlsSettings"]


class RedisSettings(Section):
    """How far an enqueue on the Redis broker waits for replicas (docs/guarantees.md)."""

    #: Replicas that must have each enqueue before it returns (Redis ``WAIT``), so a send that
    #: returned survives a failover; 0 (the default) does not wait: a failover can lose the
    #: enqueues its replica had not received yet.
    wait_replicas: int = Field(default=0, ge=0)
    #: How long an enqueue waits for them; one they do not confirm in time raises
    #: ``BrokerUnavailable`` (the message may still run: send it again with its key).
    wait_timeout_ms: int = Field(default=1000, ge=1)


class RedisTlsSettings(Section):
    """TLS for every Redis connection of a ``rediss://`` (or ``rediss+sentinel://``) URL."""

    #: The CA certificate(s) that signed the server's certificate (PEM); the system's by default.
    ca_file: str | None = None
    #: A client certificate and its key (PEM), for servers that ask for one (mutual TLS).
    cert_file: str | None = None
    key_file: str | None = None
    #: ``required`` (the default: an untrusted certificate is refused), ``optional`` or ``none``.
    verify: Literal["required", "optional", "none"] = "required"
