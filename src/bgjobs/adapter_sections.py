"""The settings of bgjobs's bundled adapters: SMTP, S3, SFTP and local files.

Apart from :mod:`bgjobs.sections` (the families' and the deployment's), which stays small.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from .sections import Section

__all__ = ["LocalStorageSettings", "S3Settings", "SftpSettings", "SmtpSettings"]


class SmtpSettings(Section):
    host: str = "localhost"
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["none", "starttls", "ssl"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    #: A PEM bundle to trust instead of the system's, for servers with a private CA.
    ca_file: str | None = None
    sender: str = "bgjobs@localhost"
    #: The domain of generated Message-IDs; stable ids let receivers drop duplicates.
    message_id_domain: str = "bgjobs.local"
    #: Each worker thread keeps its connection open for the next message, up to this many seconds
    #: idle (well under servers' idle timeouts, five minutes by RFC 5321); 0: one connection per message.
    keep_alive_s: float = Field(default=30.0, ge=0)


class S3Settings(Section):
    """The ``s3`` storage adapter (``pip install 'bgjobs[s3]'``)."""

    bucket: str | None = None
    #: Every key is stored under this prefix in the bucket.
    prefix: str = ""
    region: str | None = None
    #: For S3-compatible services (MinIO, R2); None means AWS.
    endpoint_url: str | None = None
    #: Without these, boto3 finds credentials itself (environment, profile, instance role).
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None


class SftpSettings(Section):
    """The ``sftp`` storage adapter (``pip install 'bgjobs[sftp]'``)."""

    host: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    username: str | None = None
    #: A private key file (OpenSSH or PEM), and its passphrase if it has one ...
    key_file: str | None = None
    key_passphrase: SecretStr | None = None
    #: ... or a password.
    password: SecretStr | None = None
    #: The server's host key must be in this file (``~/.ssh/known_hosts`` by default).
    known_hosts: str | None = None
    #: Trust a host key seen for the first time. Off: an unknown host is refused.
    accept_unknown_host: bool = False
    #: The directory every key is stored under.
    root: str = "."
    #: Where an HTTP server publishes ``root``: links are ``base_url/key``. Without it, links are
    #: ``sftp://user@host:port/path`` (no credentials).
    base_url: str | None = None
    timeout_s: float = Field(default=30.0, gt=0)


class LocalStorageSettings(Section):
    root: str = "bgjobs-storage"
    base_url: str | None = None
