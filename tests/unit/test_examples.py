"""The examples run as documented."""

from __future__ import annotations

import pytest

from bgjobs import InvalidPayload
from bgjobs.settings import Settings
from bgjobs.testing import stub_jobs
from examples.quickstart import app


def test_quickstart_sends_one_welcome_per_user_even_when_sent_twice() -> None:
    with stub_jobs(settings=Settings(broker_url="stub://")) as jobs:
        app.sign_up(1, "ann@example.com")
        app.sign_up(1, "ann@example.com")
        jobs.drain()
    assert [m.to for m in jobs.mailer.sent] == [("ann@example.com",)]


def test_quickstart_refuses_a_bad_email_at_the_sender() -> None:
    with stub_jobs(settings=Settings(broker_url="stub://")), pytest.raises(InvalidPayload, match="email"):
        app.sign_up(1, "not an email")
