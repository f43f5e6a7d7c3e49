"""Which sends of actors with controls are enqueued now: uniqueness and debounce
(:mod:`bgjobs.controls`), then per-key limits (:mod:`bgjobs.keying`), for ``send``,
``send_many`` and everything that sends through :func:`bgjobs.typed.send_messages` (the outbox's
relay, events, the scheduler, workflows)."""

from __future__ import annotations

from typing import Any

import dramatiq

from .controls import admit
from .keying import admit_keyed
from .registry import declared

__all__ = ["admit_all"]


def admit_all(
    broker: dramatiq.Broker, messages: list[dramatiq.Message[Any]], *, delay: int | None = None
) -> tuple[list[dramatiq.Message[Any]], list[dramatiq.Message[Any]] | None]:
    """What to enqueue now (together, with ``delay``), and what each send returns in order (None
    when nothing was held back: the enqueued messages are the answers).

    A dropped duplicate returns the holder's id; a debounced send is enqueued here with its
    debounce; one whose key is at its cap or waits for its turn stays in its key's lane and returns
    itself. A delayed send of a limited actor is admitted when it is due, by the worker.
    """
    # The senders' actors only: a send_many of one actor looks up one name, not the whole registry
    actors = {name: t for name in {m.actor_name for m in messages} if (t := declared(name)) is not None}
    if not any(getattr(t, "controls", None) or getattr(t, "limits", None) for t in actors.values()):
        return messages, None
    by_actor: dict[str, list[dramatiq.Message[Any]]] = {}
    for m in messages:
        if getattr(actors.get(m.actor_name), "controls", None) is not None:
            by_actor.setdefault(m.actor_name, []).append(m)
    answers: dict[int, dramatiq.Message[Any]] = {}
    held: set[int] = set()
    for name, group in by_actor.items():
        controls = actors[name].controls
        assert controls is not None
        sent, answered = admit(broker, actors[name], group)
        answers.update({id(m): a for m, a in zip(group, answered, strict=True)})
        held |= {id(m) for m in group} - {id(m) for m in sent}
        for m in sent:
            if controls.debounce_ms:
                broker.enqueue(m, delay=max(delay or 0, controls.debounce_ms))
                held.add(id(m))
    limited = {name for name, t in actors.items() if getattr(t, "limits", None) is not None}
    keyed = [m for m in messages if id(m) not in held and not delay and m.actor_name in limited]
    if keyed:
        going = {id(m) for m in admit_keyed(broker, keyed)}
        held |= {id(m) for m in keyed} - going
    return [m for m in messages if id(m) not in held], [answers.get(id(m), m) for m in messages]
