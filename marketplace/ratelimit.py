"""Fixed-window rate limits, shared through Redis when configured (else per process)."""

from __future__ import annotations

import threading
from collections import OrderedDict

from flask import current_app

from marketplace import clock
from marketplace.background import redis_connection
from marketplace.errors import RateLimited

_lock = threading.Lock()
_memory: OrderedDict[str, int] = OrderedDict()
_MEMORY_KEYS = 10_000


def hit(key: str, limit: int, window_seconds: int) -> None:
    """Count one event for `key`; raise 429 once `limit` events fall in the current window."""
    now = clock.now().timestamp()
    window = int(now // window_seconds)
    retry_after = int((window + 1) * window_seconds - now) + 1
    bucket = f"crowdline:rl:{key}:{window}"
    redis = redis_connection() if current_app.config["CROWDLINE"].redis_url else None
    if redis is not None:
        pipe = redis.pipeline()
        pipe.incr(bucket)
        pipe.expire(bucket, window_seconds + 5)
        count = pipe.execute()[0]
    else:
        with _lock:
            count = _memory.get(bucket, 0) + 1
            _memory[bucket] = count
            _memory.move_to_end(bucket)
            while len(_memory) > _MEMORY_KEYS:
                _memory.popitem(last=False)
    if count > limit:
        raise RateLimited(
            f"Too many attempts; try again in {retry_after} seconds.", retry_after=retry_after
        )


def reset(key_prefix: str = "") -> None:
    """Forget in-process counters (tests)."""
    with _lock:
        for bucket in [b for b in _memory if b.startswith(f"crowdline:rl:{key_prefix}")]:
            del _memory[bucket]
