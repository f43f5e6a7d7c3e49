from __future__ import annotations

import pytest

from bgjobs.errors import ConfigurationError
from bgjobs.settings import Settings, load_settings


def test_defaults_match_the_documented_ones() -> None:
    settings = Settings()
    assert settings.broker_url == "redis://localhost:6379/0"
    assert settings.database_url == "sqlite:///bgjobs.db"
    assert settings.metrics.port == 9191


def test_nested_sections_and_per_actor_overrides_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given
    monkeypatch.setenv("BGJOBS_WORKER__HEARTBEAT_TIMEOUT_MS", "5000")
    monkeypatch.setenv("BGJOBS_WEBHOOKS__MAX_RETRIES", "8")
    monkeypatch.setenv("BGJOBS_ACTORS__deliver__MAX_RETRIES", "3")
    monkeypatch.setenv("BGJOBS_SMTP__PASSWORD", "hunter2")
    # When
    settings = load_settings()
    # Then
    assert settings.worker.heartbeat_timeout_ms == 5000
    assert settings.limits_for("deliver", "webhooks").max_retries == 3
    assert settings.limits_for("other", "webhooks").max_retries == 8
    assert settings.limits_for("other", "exports").max_retries == 10
    assert settings.limits_for("other", "exports").time_limit_ms == 3_600_000
    assert "hunter2" not in repr(settings)
    assert settings.smtp.password is not None
    assert settings.smtp.password.get_secret_value() == "hunter2"


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    with open(".env", "w") as f:
        f.write("BGJOBS_BROKER_URL=redis://127.0.0.1:7000/3\n")
    assert load_settings().broker_url == "redis://127.0.0.1:7000/3"


def test_an_unparsable_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BGJOBS_WORKER__HEARTBEAT_TIMEOUT_MS", "soon")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("BGJOBS_WORKER__HEARTBEAT_TIMEOUT_MS='soon'")
    assert "\n" not in message


def test_a_bad_secret_is_named_but_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BGJOBS_SMTP", '{"password": ["sekrit-value"]}')
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert "BGJOBS_SMTP" in str(info.value)
    assert "sekrit-value" not in str(info.value)
