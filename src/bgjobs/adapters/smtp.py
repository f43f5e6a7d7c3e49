"""Mail over SMTP with the standard library: plain, STARTTLS or implicit TLS, with auth.

The Message-ID is derived from the idempotency key, so a message re-sent after
a crash carries the same id and mail systems that deduplicate on it drop the copy.
"""

from __future__ import annotations

import email.utils
import hashlib
import smtplib
import ssl
from email.message import EmailMessage as MimeMessage

from ..errors import PermanentError, TransientError
from ..ports import DeliveryReceipt, EmailMessage, Mailer
from ..redact import mask_email
from ..settings import SmtpSettings

__all__ = ["SmtpMailer", "message_id_for"]


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


def message_id_for(key: str, domain: str) -> str:
    """The deterministic Message-ID for an idempotency key."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


class SmtpMailer(Mailer):
    def __init__(self, settings: SmtpSettings | None = None) -> None:
        self.settings = settings or SmtpSettings()
        self._tls: ssl.SSLContext | None = None

    @property
    def tls(self) -> ssl.SSLContext:
        """Built once: loading the CA bundle costs tens of milliseconds, more than sending a message."""
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=self.settings.ca_file)
        return self._tls

    @classmethod
    def from_settings(cls, settings: object) -> SmtpMailer:
        return cls(getattr(settings, "smtp", None))

    def build(self, message: EmailMessage) -> MimeMessage:
        """The MIME message that would be sent; public so tests and previews can inspect it."""
        mime = MimeMessage()
        mime["From"] = message.sender or self.settings.sender
        mime["To"] = ", ".join(message.to)
        mime["Subject"] = message.subject
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
            mime[name] = value
        mime.set_content(message.text)
        if message.html is not None:
            mime.add_alternative(message.html, subtype="html")
        return mime

    def _deliver(self, mime: MimeMessage) -> None:
        s = self.settings
        client = (
            smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_s, context=self.tls)
            if s.security == "ssl"
            else smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
        )
        with client:
            if s.security == "starttls":
                client.starttls(context=self.tls)
            if s.username:
                client.login(s.username, s.password.get_secret_value() if s.password else "")
            client.send_message(mime)

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
