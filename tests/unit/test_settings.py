from __future__ import annotations

from typing import Literal, get_args, get_origin

import pytest
from pydantic import BaseModel

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


def _one_variable(section: type[BaseModel]) -> tuple[str, str, object]:
    """A field of ``section`` with a number, flag or text default, and a different valid value for it."""
    for name, field in section.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, bool):
            return name, str(not default).lower(), not default
        if isinstance(default, int) and not isinstance(default, bool):
            return name, str(default + 1), default + 1
        if isinstance(default, float):
            return name, str(default + 1), default + 1
    for name, field in section.model_fields.items():
        if get_origin(field.annotation) is Literal:  # another of its allowed values
            other = next(v for v in get_args(field.annotation) if v != field.get_default())
            return name, str(other), other
        if isinstance(default := field.get_default(), str):
            return name, default + "-x", default + "-x"
    raise AssertionError(f"{section.__name__} has no number, flag or text field to set")


SECTIONS = sorted(
    name for name, field in Settings.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
)  # fmt: skip


@pytest.mark.parametrize("section", SECTIONS)
def test_setting_one_variable_of_a_section_keeps_its_other_defaults(
    monkeypatch: pytest.MonkeyPatch, section: str
) -> None:
    # Given: one variable of the section, as a deployment sets it
    defaults = getattr(Settings(), section)
    field, raw, value = _one_variable(type(defaults))
    monkeypatch.setenv(f"BGJOBS_{section.upper()}__{field.upper()}", raw)
    # When
    settings = load_settings()
    # Then: that field changed and every other one is the section's default
    loaded = getattr(settings, section)
    assert getattr(loaded, field) == value
    others = {k: v for k, v in defaults.model_dump().items() if k != field}
    assert {k: v for k, v in loaded.model_dump().items() if k != field} == others


def test_family_limits_survive_a_variable_of_their_section(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given: the settings docs/webhooks.md suggests for local testing, and one retry setting
    monkeypatch.setenv("BGJOBS_WEBHOOKS__ALLOW", '["127.0.0.1/32"]')
    monkeypatch.setenv("BGJOBS_NOTIFICATIONS__DEFAULT_LOCALE", "de")
    monkeypatch.setenv("BGJOBS_EXPORTS__PREFIX", "out")
    monkeypatch.setenv("BGJOBS_CLEANUP__BATCH_SIZE", "100")
    monkeypatch.setenv("BGJOBS_RETRIES__MIN_BACKOFF_MS", "10")
    # When
    settings = load_settings()
    # Then: the documented limits hold
    assert settings.limits_for("webhooks.deliver", "webhooks").time_limit_ms == 60_000
    assert settings.limits_for("notifications.send", "notifications").time_limit_ms == 60_000
    assert settings.limits_for("exports.run", "exports").time_limit_ms == 3_600_000
    assert settings.limits_for("cleanup.daily", "cleanup").time_limit_ms == 3_600_000
    limits = settings.limits_for("payouts.pay", "payouts")
    assert (limits.max_retries, limits.min_backoff_ms, limits.max_backoff_ms, limits.time_limit_ms) == (
        10, 10, 3_600_000, 600_000,
    )  # fmt: skip


def test_an_empty_console_secret_is_never_a_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    from bgjobs.console._security import _same

    monkeypatch.setenv("BGJOBS_CONSOLE__PASSWORD", "")  # set, but empty
    refused = r"^BGJOBS_CONSOLE__PASSWORD: at least 8 characters \(it has 0\)"
    with pytest.raises(ConfigurationError, match=refused):
        load_settings()
    assert not _same("", "") and not _same("x", "") and _same("a-long-token", "a-long-token")
