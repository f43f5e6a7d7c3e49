"""The README's host app: one typed job, sent from application code.

Run a worker for it with:
    BGJOBS_JOBS='["examples.quickstart.app"]' BGJOBS_MAILER=console dramatiq bgjobs.actors
"""

from __future__ import annotations

from pydantic import EmailStr

import bgjobs
from bgjobs import wiring
from bgjobs.ports import EmailMessage


class Welcome(bgjobs.Payload):
    user_id: int
    email: EmailStr


@bgjobs.actor(queue="notifications")
def welcome(payload: Welcome) -> None:
    wiring.mailer().send(
        message=EmailMessage(
            to=(payload.email,),
            subject="Welcome",
            text="Hello!",
            idempotency_key=f"welcome:{payload.user_id}",
        )
    )


def sign_up(user_id: int, email: str) -> None:
    """What a request handler does: validate and enqueue, in microseconds."""
    welcome.send({"user_id": user_id, "email": email})
