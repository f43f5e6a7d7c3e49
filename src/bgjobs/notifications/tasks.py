"""Notifications' tasks: what a worker is asked to run, by name, queue and payload (no code here)."""

from __future__ import annotations

from ..typed import TypedActor, task
from ._models import BroadcastDone, Channel, ChannelMessage, DigestClose

__all__ = ["CHANNEL_TASKS", "QUEUE", "broadcast_done", "digest_close", "send_email", "send_push", "send_sms"]

QUEUE = "notifications"

send_email = task("notifications.email", queue=QUEUE, payload=ChannelMessage)
send_sms = task("notifications.sms", queue=QUEUE, payload=ChannelMessage)
send_push = task("notifications.push", queue=QUEUE, payload=ChannelMessage)
#: Closes a digest window and sends its digest (sent delayed by the window when it opens).
digest_close = task("notifications.digest_close", queue=QUEUE, payload=DigestClose)
#: A broadcast's batch is complete: its summary is logged and published (the batch's on_complete).
broadcast_done = task("notifications.broadcast_done", queue=QUEUE, payload=BroadcastDone)

#: One task per channel, so a failing SMS vendor retries the SMS alone.
CHANNEL_TASKS: dict[Channel, TypedActor[ChannelMessage, None]] = {
    Channel.EMAIL: send_email,
    Channel.SMS: send_sms,
    Channel.PUSH: send_push,
}
