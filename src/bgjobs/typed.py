"""Typed actors: one pydantic payload in, validated at the sender and again in the worker.

Declaring a typed actor needs no broker: it is recorded in :mod:`bgjobs.registry` and bound
to the runtime's broker when that is built (or at once, if it is already built), with its limits
resolved from the runtime's settings then. So importing a module that declares actors never
creates a broker by accident, and the worker builds its broker before any actor exists.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import timedelta
from typing import Any, Generic, TypeVar, get_type_hints, overload

import dramatiq
from pydantic import BaseModel, ConfigDict, ValidationError

from . import registry, runtime
from .admission import admit_all
from .controls import Controls, Unique
from .errors import PERMANENT, BrokerUnavailable, ConfigurationError, InvalidPayload, check_size
from .per_key import KeyLimits, PerKey
from .registry import QUEUES, registered
from .settings import Settings
from .workflow_steps import kept

__all__ = [
    "QUEUES", "Payload", "TypedActor", "actor", "delivery_key", "final_attempt", "registered",
    "send_messages", "task",
]  # fmt: skip

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")

class Payload(BaseModel):
    """Base for job payloads: frozen, JSON-only, and unknown fields are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TypedActor(Generic[M, R]):
    """A job with one payload model. Call :meth:`send` to enqueue it."""

    def __init__(
        self, fn: Callable[[M], R], *, name: str, queue: str, payload: type[M], options: dict[str, Any],
        priority: int = 0,
    ):  # fmt: skip
        self.fn = fn
        self.name = name
        self.queue = queue
        self.payload = payload
        self.options = options
        self.priority = priority
        self.origin = f"{fn.__module__}.{fn.__qualname__}"
        #: Uniqueness and debounce (:mod:`bgjobs.controls`), when declared.
        self.controls: Controls | None = None
        #: Concurrency and rate per key (:mod:`bgjobs.per_key`), when declared.
        self.limits: KeyLimits | None = None
        self._bound: tuple[dramatiq.Broker, dramatiq.Actor[Any, Any]] | None = None

    def __repr__(self) -> str:
        return f"TypedActor({self.name!r}, queue={self.queue!r}, payload={self.payload.__name__})"

    def validate(self, payload: M | Mapping[str, Any]) -> M:
        """Return the payload as the model, or raise :class:`InvalidPayload` naming each bad field."""
        if isinstance(payload, self.payload):
            return payload
        if isinstance(payload, BaseModel):
            payload = payload.model_dump(mode="json")
        try:
            return self.payload.model_validate(payload)
        except ValidationError as exc:
            raise InvalidPayload.from_validation_error(self.name, exc) from None

    def _run(self, data: Any) -> R:
        return self.fn(self.validate(data))

    def bind(self, broker: dramatiq.Broker, settings: Settings) -> dramatiq.Actor[Any, Any]:
        """Declare this job on ``broker`` with limits from ``settings`` (idempotent per broker)."""
        if self._bound is not None and self._bound[0] is broker:
            return self._bound[1]
        limits = settings.limits_for(self.name, self.queue)
        options: dict[str, Any] = {
            "throws": PERMANENT,
            "max_retries": limits.max_retries,
            "min_backoff": limits.min_backoff_ms,
            "max_backoff": limits.max_backoff_ms,
            "time_limit": limits.time_limit_ms,
            **self.options,
        }
        if self.name in broker.actors:
            broker.actors.pop(self.name)

        def run(data: Any) -> R:
            return kept(self._run(data))  # type: ignore[no-any-return]

        run.__module__ = getattr(self.fn, "__module__", __name__)
        run.__qualname__ = run.__name__ = self.name
        bound = dramatiq.Actor(
            run, broker=broker, actor_name=self.name, queue_name=self.queue, priority=self.priority,
            options=options,
        )
        self._bound = (broker, bound)
        return bound

    @property
    def actor(self) -> dramatiq.Actor[Any, Any]:
        """The Dramatiq actor on the runtime's broker."""
        current = runtime.current()
        return self.bind(current.broker, current.settings)

    def message(self, payload: M | Mapping[str, Any], **options: Any) -> dramatiq.Message[Any]:
        """Validate and build a message without sending it (for pipelines and batches)."""
        model = self.validate(payload)
        return self.actor.message_with_options(args=(model.model_dump(mode="json"),), **options)

    def send(
        self, payload: M | Mapping[str, Any], *, delay: timedelta | int | None = None, **options: Any
    ) -> dramatiq.Message[Any]:
        """Validate the payload and enqueue it.

        Raises:
            InvalidPayload: the payload does not validate, or the message is larger than
                ``BGJOBS_WORKER__MAX_MESSAGE_BYTES``; nothing is enqueued.
        """
        message = self.message(payload, **options)
        if isinstance(delay, timedelta):
            delay = int(delay.total_seconds() * 1000)
        broker = self.actor.broker
        _check_sizes(broker, [message])
        with reachable():
            if self.controls is None and self.limits is None:
                return broker.enqueue(message, delay=delay)
            sent, answers = admit_all(broker, [message], delay=delay)
            for found in sent:
                answers = [broker.enqueue(found, delay=delay)]
            return (answers or [message])[0]

    def send_many(
        self, payloads: Iterable[M | Mapping[str, Any]], **options: Any
    ) -> list[dramatiq.Message[Any]]:
        """Validate every payload, then enqueue them all in pipelined batches.

        Raises:
            InvalidPayload: a payload does not validate; nothing is enqueued.
        """
        messages = [self.message(p, **options) for p in payloads]
        return send_messages(self.actor.broker, messages)

    def __call__(self, payload: M | Mapping[str, Any]) -> R:
        """Run the job in this thread (for tests and scripts), validating like the worker."""
        return self._run(payload)

    def handler(self, fn: Callable[[M], R]) -> Callable[[M], R]:
        """Attach the function that runs this task's messages (see :func:`task`)."""
        self.fn = fn
        return fn


def delivery_key() -> str | None:
    """The key of the message being processed, when it has one (``outbox:<id>``, an event key).

    Guard an effect with it to drop the duplicates at-least-once delivery can bring::

        with db.session() as s:
            if key := bgjobs.delivery_key():
                if not idempotency.claim(s, key):
                    return
            ...
    """
    from dramatiq.middleware import CurrentMessage

    message = CurrentMessage.get_current_message()
    return None if message is None else message.options.get("bgjobs_key")


def final_attempt(message: Any = None) -> bool:
    """True while running the last attempt the retry policy allows: failing now dead-letters.

    Families use it to record a failure as final (``dead``) rather than ``failed``.

    Args:
        message: the message to judge; the one being processed by default.
    """
    from dramatiq.middleware import CurrentMessage

    message = message if message is not None else CurrentMessage.get_current_message()
    if message is None:
        return True
    actor = runtime.current().broker.get_actor(message.actor_name)
    max_retries = message.options.get("max_retries", actor.options.get("max_retries", 20))
    return max_retries is not None and int(message.options.get("retries", 0)) >= int(max_retries)


def send_messages(
    broker: dramatiq.Broker, messages: list[dramatiq.Message[Any]]
) -> list[dramatiq.Message[Any]]:
    """Enqueue prepared messages (of any actors) in one round trip where the broker can.

    Raises:
        InvalidPayload: a message is larger than ``BGJOBS_WORKER__MAX_MESSAGE_BYTES``; none is sent.
    """
    _check_sizes(broker, messages)
    enqueue_many = getattr(broker, "enqueue_many", None)
    with reachable():
        messages, answers = admit_all(broker, messages)
        sent = enqueue_many(messages) if enqueue_many is not None else [broker.enqueue(m) for m in messages]
        return sent if answers is None else answers


@contextlib.contextmanager
def reachable() -> Iterator[None]:
    """Turn the broker's connection errors into one line: :class:`BrokerUnavailable`."""
    from dramatiq.errors import BrokerConnectionError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, ConnectionError, BrokerConnectionError) as exc:
        from .redis_connections import explain_for

        settings = runtime.current().settings
        raise BrokerUnavailable(explain_for(exc, settings.broker_url, settings.coordination_url)) from None


def _check_sizes(broker: dramatiq.Broker, messages: list[dramatiq.Message[Any]]) -> None:
    """Refuse oversized messages on brokers that do not (bgjobs's Redis broker checks as it encodes).

    Not Dramatiq middleware: ``before_enqueue`` errors are logged and swallowed, never raised.
    """
    if getattr(broker, "checks_message_size", False):
        return
    limit = runtime.current().settings.worker.max_message_bytes
    for message in messages:
        check_size(message.actor_name, len(message.encode()), limit)


def _payload_type(fn: Callable[..., Any]) -> type[BaseModel]:
    params = list(inspect.signature(fn).parameters)
    hints = get_type_hints(fn)
    if len(params) != 1 or not (
        isinstance(hints.get(params[0]), type) and issubclass(hints[params[0]], BaseModel)
    ):
        raise ConfigurationError(
            f"{fn.__qualname__} must take exactly one parameter annotated with a pydantic model"
        )
    return hints[params[0]]  # type: ignore[no-any-return]


def task(
    name: str, *, queue: str = "default", payload: type[M], keyed_by: str | None = None, **options: Any
) -> TypedActor[M, Any]:
    """Declare a job by its name, queue and payload, before (and apart from) the code that runs it.

    Senders import the task and call :meth:`TypedActor.send`; the worker-side module attaches the
    handler with ``@the_task.handler``. So a family's sending code never imports its handling
    code (nor the handling code the sending code), and the import graph has one direction.

    ``keyed_by`` names the payload field that keys the job's per-key limits: none hold until an
    operator sets a cap or a rate (``BGJOBS_KEY_LIMITS``, ``bgjobs limits set``, the console).
    """

    def unattached(job: M) -> Any:
        raise ConfigurationError(
            f"{name} has no handler in this process: import its family (the worker does, at boot)"
        )

    typed: TypedActor[M, Any] = TypedActor(
        unattached, name=name, queue=queue, payload=payload, options=_checked(f"task {name}", options)
    )
    typed.origin = f"task:{name}"
    if keyed_by is not None:
        typed.limits = KeyLimits(KeyLimits.checked_fields(f"task {name}", payload, (keyed_by,)))
    _declare(typed)
    return typed


def _declare(typed: TypedActor[Any, Any]) -> None:
    registry.declare(typed)
    current = runtime.peek()
    if current is not None and current.built_broker is not None:
        typed.bind(current.built_broker, current.settings)


@functools.cache
def _known_options() -> frozenset[str]:
    """The actor options Dramatiq's middleware reads (``max_retries``, ``time_limit``, ...)."""
    from dramatiq.middleware import default_middleware

    return frozenset(option for m in default_middleware for option in m().actor_options)


def _checked(where: str, options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - _known_options())
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown option(s) {', '.join(unknown)}; actor options are "
            f"{', '.join(sorted(_known_options()))} (and name/actor_name, queue/queue_name, priority)"
        )
    return options


def _either(where: str, ours: str | None, theirs: str | None, what: str) -> str | None:
    if ours is not None and theirs is not None and ours != theirs:
        raise ConfigurationError(f"{where}: {what} is given twice, as {ours!r} and {theirs!r}")
    return ours if ours is not None else theirs


@overload
def actor(fn: Callable[[M], R], /) -> TypedActor[M, R]: ...


@overload
def actor(
    *, name: str | None = None, queue: str | None = None, actor_name: str | None = None,
    queue_name: str | None = None, priority: int = 0, unique: Unique | None = None,
    debounce: str | int | timedelta | None = None, concurrency: PerKey | None = None,
    rate: PerKey | None = None, **options: Any,
) -> Callable[[Callable[[M], R]], TypedActor[M, R]]: ...  # fmt: skip


def actor(
    fn: Callable[[M], R] | None = None, /, *, name: str | None = None, queue: str | None = None,
    actor_name: str | None = None, queue_name: str | None = None, priority: int = 0,
    unique: Unique | None = None, debounce: str | int | timedelta | None = None,
    concurrency: PerKey | None = None, rate: PerKey | None = None, **options: Any,
) -> TypedActor[M, R] | Callable[[Callable[[M], R]], TypedActor[M, R]]:  # fmt: skip
    """Declare a typed job: ``@bgjobs.actor`` or ``@bgjobs.actor(queue="notifications", ...)``.

    Args:
        name: the actor name (defaults to the function name); unique across the app. Dramatiq's
            ``actor_name`` is accepted for it, as ``queue_name`` is for ``queue``.
        queue: the queue, usually the family's (``notifications``, ``webhooks``, ...); ``default``.
        priority: Dramatiq's priority (lower runs first within a worker).
        unique: at most one job per key (``bgjobs.Unique(key=(...), window="10m")``); docs/controls.md.
        debounce: the last send of a burst runs, this long (``"30s"``) after the burst ends.
        concurrency: at most this many jobs per key at once (``bgjobs.PerKey("tenant_id", limit=2)``),
            keys served side by side; docs/controls.md.
        rate: at most this many jobs started per key per period (``bgjobs.PerKey("tenant_id",
            rate="100/m", burst=10)``).
        **options: Dramatiq actor options (``max_retries``, ``time_limit``, ...); they win over
            settings.

    Raises:
        ConfigurationError: an option no middleware reads (it would be ignored), or a name given
            twice under both spellings.

    Example::

        @bgjobs.actor(queue="notifications")
        def welcome(payload: Welcome) -> None: ...

        welcome.send(Welcome(user_id=1))
    """

    def decorate(fn: Callable[[M], R]) -> TypedActor[M, R]:
        where = f"@bgjobs.actor on {fn.__qualname__}"
        typed: TypedActor[M, R] = TypedActor(
            fn,
            name=_either(where, name, actor_name, "the name") or fn.__name__,
            queue=_either(where, queue, queue_name, "the queue") or "default",
            payload=_payload_type(fn),  # type: ignore[arg-type]
            options=_checked(where, options),
            priority=priority,
        )
        typed.controls = Controls.declared(where, typed.payload, unique, debounce)
        typed.limits = KeyLimits.declared(where, typed.payload, concurrency, rate)
        if typed.limits is not None and debounce is not None:
            raise ConfigurationError(f"{where}: debounce= and per-key limits do not combine; choose one")
        _declare(typed)
        return typed

    return decorate if fn is None else decorate(fn)
