"""The named queues of settings.QUEUES: their limits, retry policy and brokers."""

import os
import random
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.brokers.orm import ORM
from django_q.models import OrmQ
from django_q.signing import BadSignature, SignedPackage


@dataclass(frozen=True)
class QueueSpec:
    name: str
    workers: int
    timeout: int
    retries: int
    backoff: float

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def backoff_delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based): 5, 15, 45... +-10%."""
        delay = self.backoff * 3 ** (attempt - 1)
        return delay * random.uniform(0.9, 1.1)


def queue_names() -> list[str]:
    return list(settings.QUEUES)


def get_queue(name: str) -> QueueSpec:
    try:
        spec = settings.QUEUES[name]
    except KeyError:
        raise ValueError(f"Unknown queue {name!r}; queues are {', '.join(queue_names())}") from None
    return QueueSpec(name=name, **spec)


def broker_for(queue: str) -> Broker:
    """One broker per queue per process: django-q2 opens a new Redis connection pool per
    async_task call unless it is handed a broker."""
    return _broker(queue, os.getpid())


@cache
def _broker(queue: str, pid: int) -> Broker:
    return get_broker(queue)


def broker_shares_the_database(queue: str) -> bool:
    return isinstance(broker_for(queue), ORM)


def current_worker() -> str:
    return f"{settings.MACHINE_NAME}:{os.getpid()}"


def dispatch_ids_in_broker(queue: str) -> set[str]:
    """The dispatch tokens of every task waiting in the queue's broker. Reads the whole
    queue: call it only when something looks lost. An ORM row that a cluster has locked
    is not waiting: if that cluster died, the row only comes back after `retry`."""
    broker = broker_for(queue)
    if isinstance(broker, ORM):
        waiting = OrmQ.objects.filter(key=broker.list_key, lock__lte=timezone.now())
        payloads = waiting.values_list("payload", flat=True).iterator()
    else:
        payloads = broker.connection.lrange(broker.list_key, 0, -1)
    tokens = set()
    for payload in payloads:
        try:
            args = SignedPackage.loads(payload)["args"]
        except (BadSignature, KeyError, TypeError):
            continue
        if len(args) == 2:
            tokens.add(str(args[1]))
    return tokens
