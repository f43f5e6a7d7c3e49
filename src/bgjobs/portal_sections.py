"""The tenant portal's settings (``BGJOBS_PORTAL__*``): where it is served, its signing keys, its brand."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from .sections import MIN_TOKEN, Section

__all__ = ["PortalSettings"]


def _labels() -> dict[str, str]:
    return {
        "transactional": "Bookings and payments",
        "reminders": "Reminders",
        "marketing": "News and offers",
    }


class PortalSettings(Section):
    """The portal the host's own customers use (docs/portal.md): their webhook endpoints and their
    notification preferences, behind links :func:`bgjobs.portal.link` signs."""

    #: The absolute URL the portal is served at (where the host mounted it, or ``bgjobs portal``'s
    #: address with ``/portal``); links and unsubscribe headers point under it.
    base_url: str | None = None
    #: The key links are signed with; without it no link can be made and the portal refuses all.
    secret: SecretStr | None = None
    #: Keys links were signed with before the last rotation: still accepted, never used to sign.
    previous_secrets: list[SecretStr] = Field(default_factory=list)
    #: The longest a link may live (``ttl=`` above it is refused), and an unsubscribe link's life.
    max_link_ttl_s: int = Field(default=7 * 86_400, ge=60)
    unsubscribe_ttl_s: int = Field(default=365 * 86_400, ge=86_400)
    #: The host's brand on every page.
    brand_name: str = Field(default="Account settings", min_length=1, max_length=80)
    logo_url: str | None = Field(default=None, pattern=r"^(https://|/)\S+$")
    accent_colour: str = Field(default="#2456a6", pattern=r"^#[0-9a-fA-F]{6}$")
    #: Origins allowed to show the portal in a frame (CSP ``frame-ancestors``); empty: none.
    frame_ancestors: list[str] = Field(default_factory=list)
    #: State-changing calls one owner may make per minute (every link of theirs together).
    changes_per_minute: int = Field(default=60, ge=1)
    #: What each notification category is called on the preferences page (the operational category,
    #: operators' alerts, is never shown).
    category_labels: dict[str, str] = Field(default_factory=_labels)
    #: The event type of the test event an owner sends to one of their endpoints.
    test_event_type: str = Field(default="webhook.test", pattern=r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
    host: str = "127.0.0.1"
    port: int = Field(default=9182, ge=0, le=65535)

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN:
            raise ValueError(
                f"at least {MIN_TOKEN} characters; for example "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("an absolute URL (https://app.example.com/portal), where the portal is served")
        return None if value is None else value.rstrip("/")
