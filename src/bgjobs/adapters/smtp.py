"""Mail over SMTP with the standard library: plain, STARTTLS or implicit TLS, with auth.

The Message-ID is derived from the idempotency key, so a message re-sent after
a crash carries the same id and mail systems that deduplicate on it drop the copy.

Each worker thread keeps its connection for the next message (``BGJOBS_SMTP__KEEP_ALIVE_S``):
connecting, greeting, EHLO, TLS and login cost more round trips than the message itself (MAIL,
RCPT, DATA), and the server's work per connection too.
"""

from __future__ import annotations

import email.utils
import hashlib
import smtplib
import ssl
import threading
import time
from email.charset import QP, Charset
from email.header import Header
from email.message import EmailMessage as MimeMessage
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

from ..errors import PermanentError, TransientError
from ..ports import DeliveryReceipt, EmailMessage, Mailer
from ..redact import mask_email
from ..settings import SmtpSettings

__all__ = ["SmtpMailer", "message_id_for"]


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP  # readable where it is ASCII, unlike base64


def _part(body: str, subtype: str) -> MIMEText:
    """One body: 7bit when it is ASCII in lines SMTP carries as they are, else UTF-8 quoted-printable."""
    plain = body.isascii() and all(len(line) <= 998 for line in body.splitlines())
    return MIMEText(body, subtype, "us-ascii" if plain else _UTF8_QP)  # type: ignore[arg-type]


def _header(value: str) -> str | Header:
    """A header value as it may be written: as given when ASCII, else RFC 2047 encoded."""
    return value if value.isascii() else Header(value, "utf-8")


def message_id_for(key: str, domain: str) -> str:
    """The deterministic Message-ID for an idempotency key."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


class SmtpMailer(Mailer):
    def __init__(self, settings: SmtpSettings | None = None) -> None:
        self.settings = settings or SmtpSettings()
        self._tls: ssl.SSLContext | None = None
        #: Each worker thread's kept connection (``client``) and when it last sent (``used``).
        self._local = threading.local()
        self._open: set[smtplib.SMTP] = set()
        self._lock = threading.Lock()

    @property
    def tls(self) -> ssl.SSLContext:
        """Built once: loading the CA bundle costs tens of milliseconds, more than sending a message."""
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=self.settings.ca_file)
        return self._tls

    @classmethod
    def from_settings(cls, settings: object) -> SmtpMailer:
        return cls(getattr(settings, "smtp", None))

    def build(self, message: EmailMessage) -> Message:
        """The MIME message that would be sent; public so tests and previews can inspect it.

        Built with the standard library's classic MIME classes, which take headers as given: the
        newer ``EmailMessage`` parses every header it is handed into an object, and building and
        flattening a message that way cost 0.85 ms, the largest part of sending one (0.25 ms now).
        A message with an address outside ASCII (which needs SMTPUTF8) is built the newer way.
        """
        sender = message.sender or self.settings.sender
        addresses = [sender, *message.to, *([message.reply_to] if message.reply_to else [])]
        if not all(a.isascii() for a in addresses):
            return self._build_international(message, sender)
        parts = [_part(message.text, "plain")]
        if message.html is not None:
            parts.append(_part(message.html, "html"))
        mime: Message = parts[0] if len(parts) == 1 else MIMEMultipart("alternative", _subparts=parts)
        self._headers(mime, message, sender)
        return mime

    def _headers(self, mime: Message, message: EmailMessage, sender: str, encode: Any = _header) -> None:
        """The headers; ``encode`` writes a free-text value as the message's class takes it (the
        classic classes a ``Header`` where it is not ASCII, ``EmailMessage`` the text itself)."""
        mime["From"] = sender
        mime["To"] = ", ".join(message.to)
        mime["Subject"] = encode(message.subject)
        mime["Date"] = email.utils.formatdate(localtime=False)
        if message.reply_to:
            mime["Reply-To"] = message.reply_to
        key = message.idempotency_key
        mime["Message-ID"] = (
            message_id_for(key, self.settings.message_id_domain)
            if key
            else email.utils.make_msgid(domain=self.settings.message_id_domain)
        )
        for name, value in message.headers.items():
            mime[name] = encode(value)

    def _build_international(self, message: EmailMessage, sender: str) -> MimeMessage:
        mime = MimeMessage()
        self._headers(mime, message, sender, encode=str)
        mime.set_content(message.text)
        if message.html is not None:
            mime.add_alternative(message.html, subtype="html")
        return mime

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        client = (
            smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_s, context=self.tls)
            if s.security == "ssl"
            else smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
        )
        try:
            if s.security == "starttls":
                client.starttls(context=self.tls)
            if s.username:
                client.login(s.username, s.password.get_secret_value() if s.password else "")
        except BaseException:
            client.close()
            raise
        return client

    def _client(self) -> tuple[smtplib.SMTP, bool]:
        """This thread's open connection and True, or a new one and False."""
        kept: smtplib.SMTP | None = getattr(self._local, "client", None)
        if kept is not None and time.monotonic() - self._local.used <= self.settings.keep_alive_s:
            return kept, True
        if kept is not None:
            self._drop(kept)
        client = self._connect()
        if self.settings.keep_alive_s > 0:
            self._local.client = client
            with self._lock:
                self._open.add(client)
        return client, False

    def _drop(self, client: smtplib.SMTP, *, polite: bool = False) -> None:
        if getattr(self._local, "client", None) is client:
            self._local.client = None
        with self._lock:
            self._open.discard(client)
        try:
            if polite:
                client.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            client.close()

    def _deliver(self, mime: Message) -> None:
        """Send on this thread's connection, opening one if it has none or it sat idle too long.

        A kept connection the server closed meanwhile (its idle timeout, a restart) fails at the
        first command; the message is sent once more on a new one. Any other failure drops the
        connection, so the next message starts clean.
        """
        client, kept = self._client()
        try:
            client.send_message(mime)
        except smtplib.SMTPServerDisconnected:
            self._drop(client)
            if not kept:
                raise
            client, _ = self._client()
            try:
                client.send_message(mime)
            except BaseException:
                self._drop(client)
                raise
        except BaseException:
            self._drop(client)
            raise
        if self.settings.keep_alive_s > 0:
            self._local.used = time.monotonic()
        else:
            self._drop(client, polite=True)

    def close(self) -> None:
        """Close every kept connection (a worker stopping, a test ending)."""
        with self._lock:
            kept, self._open = list(self._open), set()
        for client in kept:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                pass
            finally:
                client.close()

    def _send(self, *, message: EmailMessage) -> DeliveryReceipt:
        mime = self.build(message)
        try:
            self._deliver(mime)
        except smtplib.SMTPRecipientsRefused as exc:
            # The reason is stored and logged: name the recipients masked, never in full.
            refused = "; ".join(
                f"{mask_email(str(a))}: {code} {_text(reply)}" for a, (code, reply) in exc.recipients.items()
            )
            raise PermanentError(f"SMTP server refused the recipient(s): {refused}") from None
        except (smtplib.SMTPSenderRefused, smtplib.SMTPNotSupportedError) as exc:
            raise PermanentError(f"SMTP server refused the message: {exc}") from exc
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentError(f"SMTP authentication failed (code {exc.smtp_code})") from exc
        except smtplib.SMTPResponseException as exc:
            cls = PermanentError if 500 <= exc.smtp_code < 600 else TransientError
            raise cls(f"SMTP error {exc.smtp_code}: {exc.smtp_error!r}") from exc
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            raise TransientError(f"SMTP server unreachable: {exc}") from exc
        return DeliveryReceipt(provider_message_id=mime["Message-ID"])
