"""What the console shows of a payload: identifiers and a job's counters, never amounts, free text
or secrets, and contact details as the logs mask them."""

from __future__ import annotations

from bgjobs.console._masking import masked


def test_a_delivery_job_shows_its_counters_and_identifiers() -> None:
    job = {"delivery_id": "dlv_1", "endpoint_id": "ep_1", "attempt": 3, "deferrals": 2, "turn_ms": 1500,
           "check": False, "trace": "00-abc-def-01"}  # fmt: skip
    assert masked(job) == {**job, "trace": "***"}


def test_amounts_free_text_secrets_and_contacts_stay_hidden() -> None:
    payload = {"amount": 1299, "note": "call me", "api_key": "sk_live_1", "email": "jane.doe@example.com",
               "phone": "+15551234567", "lines": [{"sku_id": "s1", "price": "9.99"}]}  # fmt: skip
    assert masked(payload) == {"amount": "***", "note": "***", "api_key": "***", "email": "j***@example.com",
                               "phone": masked({"phone": "+15551234567"})["phone"],
                               "lines": [{"sku_id": "s1", "price": "***"}]}  # fmt: skip
    assert "1234567" not in str(masked(payload))
