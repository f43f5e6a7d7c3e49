"""The SMTP adapter against a real aiosmtpd server on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import socket
from collections.abc import Iterator
from email.message import EmailMessage as MimeMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from bgjobs.adapters.smtp import SmtpMailer
from bgjobs.embedded import free_port
from bgjobs.errors import PermanentError, TransientError
from bgjobs.ports import EmailMessage
from bgjobs.settings import SmtpSettings


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, MimeMessage]] = []
        self.refuse: str | None = None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.refuse and address == self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        envelope.peer = session.peer  # type: ignore[attr-defined]  # which connection brought it
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)  # type: ignore[arg-type]
        self.messages.append((envelope, parsed))  # type: ignore[arg-type]
        return "250 Message accepted"


def _authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == b"mailer" and data.password == b"s3cret"
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535 itself


@pytest.fixture
def smtp_server() -> Iterator[tuple[Controller, Recorder]]:
    recorder = Recorder()
    controller = Controller(
        recorder, hostname="127.0.0.1", port=free_port(), authenticator=_authenticate, auth_require_tls=False
    )
    controller.start()
    yield controller, recorder
    _close_mailers()  # their kept connections first, then the server
    controller.stop()


#: The mailers a test made: each keeps a connection per thread, closed before the server stops.
_MADE: list[SmtpMailer] = []


def _close_mailers() -> None:
    while _MADE:
        _MADE.pop().close()


def mailer_for(controller: Controller, **overrides: Any) -> SmtpMailer:
    mailer = SmtpMailer(
        SmtpSettings(host="127.0.0.1", port=controller.port, sender="shop@example.com", **overrides)
    )
    _MADE.append(mailer)
    return mailer


def test_a_thread_keeps_its_connection_and_replaces_one_the_server_dropped(
    smtp_server: tuple[Controller, Recorder],
) -> None:
    controller, recorder = smtp_server
    mailer = mailer_for(controller)
    first = EmailMessage(to=("ann@example.com",), subject="one", text="t", idempotency_key="k-one")
    for n in range(3):
        mailer.send(message=first.model_copy(update={"subject": f"message {n}"}))
    peers = [envelope.peer for envelope, _ in recorder.messages]  # type: ignore[attr-defined]
    assert len(peers) == 3 and len(set(peers)) == 1  # one connection for all three
    # The server drops the kept connection (an idle timeout, a restart): the next message goes
    # once, on a new connection
    kept = mailer._local.client
    kept.sock.shutdown(socket.SHUT_RDWR)
    mailer.send(message=first.model_copy(update={"subject": "after the drop"}))
    subjects = [m["Subject"] for _, m in recorder.messages]
    assert subjects == ["message 0", "message 1", "message 2", "after the drop"]
    assert recorder.messages[-1][0].peer != peers[0]  # type: ignore[attr-defined]
    # keep_alive_s=0: a connection per message, closed after it (QUIT)
    single = mailer_for(controller, keep_alive_s=0)
    single.send(message=first)
    single.send(message=first)
    assert len({e.peer for e, _ in recorder.messages[-2:]}) == 2  # type: ignore[attr-defined]
    assert single._open == set()


def test_an_email_arrives_with_headers_and_both_bodies(smtp_server: tuple[Controller, Recorder]) -> None:
    controller, recorder = smtp_server
    mailer = mailer_for(controller, username="mailer", password="s3cret")
    receipt = mailer.send(
        message=EmailMessage(
            to=("ann@example.com",),
            subject="Booking confirmed",
            text="Your booking 123 is confirmed.",
            html="<p>Your booking <b>123</b> is confirmed.</p>",
            idempotency_key="booking:123:confirmed:email",
            headers={"X-Booking": "123"},
        )
    )
    ((envelope, mime),) = recorder.messages
    assert envelope.mail_from == "shop@example.com"
    assert envelope.rcpt_tos == ["ann@example.com"]
    assert mime["Subject"] == "Booking confirmed"
    assert mime["X-Booking"] == "123"
    assert mime["Message-ID"] == receipt.provider_message_id
    plain = mime.get_body(preferencelist=("plain",))
    html = mime.get_body(preferencelist=("html",))
    assert plain is not None and plain.get_content().strip() == "Your booking 123 is confirmed."
    assert html is not None and "<b>123</b>" in html.get_content()


def test_text_outside_ascii_and_long_lines_arrive_as_written(
    smtp_server: tuple[Controller, Recorder],
) -> None:
    controller, recorder = smtp_server
    long_line = "Reserva " + "x" * 1200  # over SMTP's 998-character line limit
    sent = EmailMessage(
        to=("ann@example.com",), subject="Reserva confirmada: São Paulo ☀ " + "é" * 60,
        text=f"Olá Ana,\nsua reserva está confirmada.\n{long_line}\n", html="<p>Olá <b>Ana</b> — até já</p>",
        headers={"List-Unsubscribe": "<https://app.example.com/portal/unsubscribe/abc>", "X-Nota": "café"},
    )  # fmt: skip
    mailer_for(controller).send(message=sent)
    mailer_for(controller).send(message=sent.model_copy(update={"text": "plain ascii", "html": None}))
    ((_, rich), (_, simple)) = recorder.messages
    assert rich["Subject"] == sent.subject and rich["X-Nota"] == "café"
    assert rich["List-Unsubscribe"] == "<https://app.example.com/portal/unsubscribe/abc>"
    plain, html = rich.get_body(preferencelist=("plain",)), rich.get_body(preferencelist=("html",))
    assert plain is not None and plain.get_content().replace("\r\n", "\n") == sent.text
    assert html is not None and html.get_content().strip() == sent.html
    assert simple.get_content_type() == "text/plain" and simple.get_content().strip() == "plain ascii"
    assert simple["Content-Transfer-Encoding"] == "7bit"
    # An address outside ASCII needs SMTPUTF8: the message is built the newer way, which writes it
    wide = mailer_for(controller).build(sent.model_copy(update={"to": ("zoë@example.com",)}))
    assert isinstance(wide, MimeMessage) and wide["To"] == "zoë@example.com"
    assert wide["Subject"] == sent.subject and wide.get_body(preferencelist=("plain",)) is not None


def test_the_message_id_is_stable_across_a_retry(smtp_server: tuple[Controller, Recorder]) -> None:
    controller, recorder = smtp_server
    mailer = mailer_for(controller)
    message = EmailMessage(to=("ann@example.com",), subject="s", text="t", idempotency_key="k-1")
    mailer.send(message=message)
    mailer.send(message=message)
    ids = [mime["Message-ID"] for _, mime in recorder.messages]
    assert len(ids) == 2 and ids[0] == ids[1]
    other = mailer.send(message=message.model_copy(update={"idempotency_key": "k-2"}))
    assert other.provider_message_id != ids[0]


def test_a_refused_recipient_is_permanent(smtp_server: tuple[Controller, Recorder]) -> None:
    controller, recorder = smtp_server
    recorder.refuse = "ghost@example.com"
    with pytest.raises(PermanentError, match="refused") as raised:
        mailer_for(controller).send(message=EmailMessage(to=("ghost@example.com",), subject="s", text="t"))
    # The reason is stored and logged: the address is masked.
    reason = "SMTP server refused the recipient(s): g***@example.com: 550 5.1.1 no such user"
    assert str(raised.value) == reason
    assert "ghost" not in repr(raised.value.__cause__ or "")


def test_wrong_credentials_are_permanent_and_the_password_is_not_in_the_error(
    smtp_server: tuple[Controller, Recorder],
) -> None:
    controller, _ = smtp_server
    mailer = mailer_for(controller, username="mailer", password="wrong-password")
    with pytest.raises(PermanentError) as info:
        mailer.send(message=EmailMessage(to=("a@example.com",), subject="s", text="t"))
    assert "wrong-password" not in str(info.value)
    assert "wrong-password" not in repr(mailer.settings)


def test_an_unreachable_server_is_transient() -> None:
    mailer = SmtpMailer(SmtpSettings(host="127.0.0.1", port=free_port(), timeout_s=2))
    with pytest.raises(TransientError, match="unreachable"):
        mailer.send(message=EmailMessage(to=("a@example.com",), subject="s", text="t"))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A throwaway self-signed certificate for 127.0.0.1, made with the machine's openssl."""
    import subprocess

    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _server_context(certificate: tuple[str, str]) -> Any:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_tls_modes_deliver_with_auth_and_verify_the_server(
    security: str, certificate: tuple[str, str]
) -> None:
    recorder = Recorder()
    tls = _server_context(certificate)
    # aiosmtpd only counts STARTTLS as TLS when deciding to offer AUTH, so under implicit TLS it
    # must be told to offer it anyway; the connection is encrypted from the first byte either way.
    extra: dict[str, Any] = (
        {"tls_context": tls, "require_starttls": True, "auth_require_tls": True}
        if security == "starttls"
        else {"ssl_context": tls, "auth_require_tls": False}
    )
    controller = Controller(
        recorder, hostname="127.0.0.1", port=free_port(), authenticator=_authenticate, **extra
    )
    controller.start()
    try:
        message = EmailMessage(to=("ann@example.com",), subject="Over TLS", text="t")
        # Trusting the server's certificate: delivered, authenticated inside TLS.
        trusted = mailer_for(
            controller, security=security, ca_file=certificate[0], username="mailer", password="s3cret"
        )
        trusted.send(message=message)
        assert [m["Subject"] for _, m in recorder.messages] == ["Over TLS"]
        # Not trusting it: refused before any credential is sent, as a transient error (fix the trust, retry).
        untrusted = mailer_for(controller, security=security, username="mailer", password="s3cret")
        with pytest.raises(TransientError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusted.send(message=message)
        assert len(recorder.messages) == 1
    finally:
        _close_mailers()
        controller.stop()
