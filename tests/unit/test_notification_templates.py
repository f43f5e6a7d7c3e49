"""Templates, SMS segments and the errors ``send()`` raises for bad input."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from bgjobs.errors import InvalidPayload
from bgjobs.notifications import Channel, Recipient, count_segments, registered_templates, send
from bgjobs.notifications import _templates as template_module
from bgjobs.notifications._models import Category
from bgjobs.notifications._templates import Template, get_template, locale_chain, register_template, render
from bgjobs.settings import Settings
from bgjobs.testing import JobsHarness, stub_jobs

ANN = Recipient(
    user_id="u1", email="ann@example.com", phone="+447700900123", push_tokens=("tok-1",), name="Ann"
)

#: Variables that fill each bundled template.
SAMPLES: dict[str, dict[str, Any]] = {
    "booking_confirmation": {"booking_id": "B1", "trip_date": date(2025, 6, 15),
                             "total": {"amount": "500.00", "currency": "USD"}, "destination": "Lisbon"},
    "booking_cancellation": {"booking_id": "B1", "trip_date": date(2025, 6, 15),
                             "refund": {"amount": "450.00", "currency": "USD"}, "refund_days": 5},
    "payment_reminder": {"booking_id": "B1", "trip_date": date(2025, 6, 15),
                         "amount_due": {"amount": "250.00", "currency": "EUR"}, "days_until": 3},
    "payment_confirmation": {"payment_id": "P9", "amount": {"amount": "250.00", "currency": "EUR"}},
    "appointment_reminder": {"appointment_id": "A1", "starts_at": datetime(2025, 6, 15, 9, 30, tzinfo=UTC),
                             "service": "Grooming", "location": "12 High St"},
    "payout_receipt": {"receipt_id": "R1", "amount": {"amount": "520.00", "currency": "USD"},
                       "period": "2025-W23", "booking_count": 3, "transaction_id": "po_1"},
    "dunning": {"account_name": "Acme", "update_url": "https://example.com/billing"},
    "low_balance_alert": {"balance": {"amount": "900", "currency": "JPY"},
                          "threshold": {"amount": "1000", "currency": "JPY"}, "direction": "below"},
    "export_ready": {"export_id": "exp_1", "dataset": "invoices", "period": "2025-06", "fmt": "csv",
                     "rows": 3, "size": 120, "url": "https://files.example.com/exp_1.csv"},
    "export_failed": {"export_id": "exp_1", "dataset": "invoices", "error": "the database went away"},
    "webhook_endpoint_disabled": {"endpoint_id": "ep_1", "url": "https://hooks.example.com/in",
                                  "reason": "the endpoint answered 410 Gone",
                                  "disabled_at": datetime(2025, 6, 15, 9, 30, tzinfo=UTC)},
    "reminder_digest": {"count": 2, "items": [
        {"template": "payment_reminder", "key": "k1", "summary": "Booking B1: 250 EUR due.", "context": {}},
        {"template": "dunning", "key": "k2", "summary": "Update the payment method for Acme", "context": {}},
    ]},
}  # fmt: skip


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[JobsHarness]:
    with stub_jobs(
        settings=Settings(broker_url="stub://", database_url=f"sqlite:///{tmp_path / 'n.db'}")
    ) as h:
        yield h


def test_every_bundled_template_renders_every_channel_it_declares() -> None:
    import bgjobs.worker

    for module in bgjobs.worker.FAMILY_MODULES:  # each family registers its own templates
        importlib.import_module(module)
    assert set(SAMPLES) == set(registered_templates())
    for name, variables in SAMPLES.items():
        tpl = get_template(name)
        checked = tpl.check(variables)
        for channel in tpl.channels:
            content = render(tpl, channel, checked, ANN, host_dir=None, default_locale="en")
            assert content.text, (name, channel)
            if channel is not Channel.SMS:
                assert content.subject, (name, channel)
            if channel is Channel.SMS:
                assert count_segments(content.text).segments == 1, (name, content.text)
        if Channel.EMAIL in tpl.channels:
            email = render(tpl, Channel.EMAIL, checked, ANN, host_dir=None, default_locale="en")
            assert email.html is not None and "<p>" in email.html


def test_payment_reminder_wording_follows_the_days_until_the_trip() -> None:
    tpl = get_template("payment_reminder")
    subjects = {}
    for days in (0, 1, 3, 14):
        checked = tpl.check({**SAMPLES["payment_reminder"], "days_until": days})
        subjects[days] = render(tpl, Channel.EMAIL, checked, ANN, host_dir=None, default_locale="en").subject
    assert "today" in subjects[0]
    assert "tomorrow" in subjects[1]
    assert "3 days" in subjects[3]
    assert "14 days" in subjects[14]
    assert len(set(subjects.values())) == 4


def test_cancellation_states_refund_and_timeline() -> None:
    tpl = get_template("booking_cancellation")
    text = render(tpl, Channel.EMAIL, tpl.check(SAMPLES["booking_cancellation"]), ANN, host_dir=None,
                  default_locale="en").text  # fmt: skip
    assert "$450.00" in text and "5 business days" in text


@pytest.mark.parametrize(
    ("locale", "shown"),
    [("pt-BR", "R$\xa01.234,50"), ("de-DE", "1.234,50\xa0R$"), ("en", "R$1,234.50"), ("xx-YY", "R$1,234.50"),
     (None, "R$1,234.50")],
)  # fmt: skip
def test_money_is_written_as_the_recipients_locale_writes_it(locale: str | None, shown: str) -> None:
    tpl = get_template("payment_confirmation")
    who = ANN.model_copy(update={"locale": locale})
    variables = tpl.check({"payment_id": "P9", "amount": {"amount": "1234.50", "currency": "BRL"}})
    text = render(tpl, Channel.EMAIL, variables, who, host_dir=None, default_locale="en").text
    assert shown in text, text


def test_html_escapes_variables_and_text_does_not() -> None:
    tpl = get_template("booking_confirmation")
    checked = tpl.check({**SAMPLES["booking_confirmation"], "destination": "<script>x</script>"})
    email = render(tpl, Channel.EMAIL, checked, ANN, host_dir=None, default_locale="en")
    assert email.html is not None and "&lt;script&gt;" in email.html and "<script>" not in email.html
    assert "<script>x</script>" in email.text


def test_appointment_time_is_shown_in_the_recipients_zone() -> None:
    tpl = get_template("appointment_reminder")
    lisbon = ANN.model_copy(update={"timezone": "America/New_York"})
    sms = render(tpl, Channel.SMS, tpl.check(SAMPLES["appointment_reminder"]), lisbon, host_dir=None,
                 default_locale="en").text  # fmt: skip
    assert "05:30" in sms  # 09:30 UTC is 05:30 in New York in June


def test_locale_chain_goes_from_specific_to_default() -> None:
    assert locale_chain("pt_BR", "en") == ["pt-BR", "pt", "en"]
    assert locale_chain(None, "en") == ["en"]
    assert locale_chain("en-GB", "en") == ["en-GB", "en"]


def test_host_directory_overrides_one_part_and_localises_with_fallback(tmp_path: Path) -> None:
    (tmp_path / "en" / "booking_confirmation").mkdir(parents=True)
    (tmp_path / "en" / "booking_confirmation" / "sms.txt").write_text("Host SMS for {{ booking_id }}")
    (tmp_path / "pt" / "booking_confirmation").mkdir(parents=True)
    (tmp_path / "pt" / "booking_confirmation" / "subject.txt").write_text(
        "Reserva {{ booking_id }} confirmada"
    )
    tpl = get_template("booking_confirmation")
    checked = tpl.check(SAMPLES["booking_confirmation"])
    host = str(tmp_path)
    assert (
        render(tpl, Channel.SMS, checked, ANN, host_dir=host, default_locale="en").text == "Host SMS for B1"
    )
    brazilian = ANN.model_copy(update={"locale": "pt-BR"})
    email = render(tpl, Channel.EMAIL, checked, brazilian, host_dir=host, default_locale="en")
    assert email.subject == "Reserva B1 confirmada"  # pt-BR -> pt in the host's directory
    assert "is confirmed" in email.text  # no pt text anywhere: bgjobs's en


def test_a_host_template_without_a_model_still_fails_on_an_undefined_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(template_module, "_templates", dict(template_module._templates))
    (tmp_path / "en" / "welcome").mkdir(parents=True)
    (tmp_path / "en" / "welcome" / "subject.txt").write_text("Welcome {{ first_name }}")
    (tmp_path / "en" / "welcome" / "text.txt").write_text("Hi {{ first_name }}, your code is {{ code }}")
    register_template(Template("welcome", Category.TRANSACTIONAL, (Channel.EMAIL,)))
    tpl = get_template("welcome")
    with pytest.raises(InvalidPayload, match=r"template welcome \(text.txt\): 'code' is undefined"):
        render(tpl, Channel.EMAIL, {"first_name": "Ann"}, ANN, host_dir=str(tmp_path), default_locale="en")


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("€" * 80, "GSM-7", 1),  # an extension character takes two septets
        ("€" * 81, "GSM-7", 2),
        ("é" * 160, "GSM-7", 1),  # é is in the basic alphabet
        ("ú" + "a" * 69, "UCS-2", 1),  # ú is not: the whole text becomes UCS-2
        ("ú" + "a" * 70, "UCS-2", 2),
        ("😀" * 35, "UCS-2", 1),  # an emoji is two UTF-16 units
        ("😀" * 36, "UCS-2", 2),
    ],
)
def test_sms_segments(text: str, encoding: str, segments: int) -> None:
    counted = count_segments(text)
    assert (counted.encoding, counted.segments) == (encoding, segments)


CONFIRMATION = SAMPLES["booking_confirmation"]


@pytest.mark.parametrize(
    ("template", "recipient", "context", "channels", "message"),
    [
        ("booking_confirmation", {"user_id": "u1", "email": "not-an-email"}, CONFIRMATION, None,
         r"recipient: email: value is not a valid email address"),
        ("booking_confirmation", {"user_id": "u1", "phone": "07700900123"}, CONFIRMATION, None,
         r"recipient: phone: Value error, must be an E.164 number"),
        ("booking_confirmatoin", {"user_id": "u1", "email": "a@example.com"}, CONFIRMATION, None,
         r"unknown template 'booking_confirmatoin'; known templates: appointment_reminder"),
        ("booking_confirmation", {"user_id": "u1", "email": "a@example.com"},
         {k: v for k, v in CONFIRMATION.items() if k != "trip_date"}, None,
         r"template booking_confirmation: trip_date: Field required"),
        ("booking_confirmation", {"user_id": "u1", "email": "a@example.com"},
         {**CONFIRMATION, "total": {"amount": 500.0, "currency": "USD"}}, None,
         r"template booking_confirmation: total.amount: Value error, floats are not accepted"),
        ("booking_confirmation", {"user_id": "u1", "email": "a@example.com"}, CONFIRMATION, ["sms"],
         r"recipient.phone: required to send booking_confirmation by sms"),
        ("dunning", {"user_id": "u1", "email": "a@example.com"}, SAMPLES["dunning"], ["sms"],
         r"template dunning has no sms version"),
        ("booking_confirmation", {"user_id": "u1", "email": "a@example.com"}, CONFIRMATION, ["fax"],
         r"unknown channel 'fax'"),
        ("booking_confirmation", {"user_id": "u1"}, CONFIRMATION, None,
         r"recipient u1 has no address for any of booking_confirmation's channels"),
        ("booking_confirmation", {"user_id": "u1", "phone": "+447700900123"},
         {**CONFIRMATION, "booking_id": "x" * 200}, None,
         r"SMS is \d+ GSM-7 characters, 2 segments; the budget is 1"),
        ("booking_confirmation", {"user_id": "u1", "phone": "+447700900123"},
         {**CONFIRMATION, "booking_id": "Zoë\u2019s trip " * 6}, None,
         r"SMS is \d+ UCS-2 characters, 2 segments"),
    ],
)  # fmt: skip
def test_bad_input_fails_at_send_naming_what_is_wrong(
    jobs: JobsHarness, template: str, recipient: dict[str, Any], context: dict[str, Any],
    channels: list[str] | None, message: str,
) -> None:  # fmt: skip
    with pytest.raises(InvalidPayload, match=message):
        send(template, recipient, context, channels=channels)
    assert not any(jobs.broker.queues[q].qsize() for q in jobs.broker.queues)


def test_a_family_s_template_is_read_from_the_family_s_own_directory() -> None:
    import bgjobs.payouts
    from bgjobs.notifications import _templates

    receipt = get_template("payout_receipt")
    assert receipt.directory == Path(bgjobs.payouts.__file__).with_name("templates")
    assert (receipt.directory / "en" / "payout_receipt" / "subject.txt").is_file()
    assert not (_templates.BUNDLED_DIR / "en" / "payout_receipt").exists()
