"""Simulated workers: honest people of varied accuracy and speed, and the usual fraudsters.

Every draw comes from one seeded `random.Random`, so a crowd (and each of its answers, in
the order the driver asks for them) is the same under the same seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

HONEST = "honest"
CLICKER = "random_clicker"  # answers at random
SPAMMER = "constant_spammer"  # always the same answer
SPEED_GAMER = "speed_gamer"  # 1–2 s a task, random answers
RING = "colluding_ring"  # copy one member's answer
MULTI = "multi_account"  # several accounts on one device, answers copied or random
FRAUD_KINDS = (CLICKER, SPAMMER, SPEED_GAMER, RING, MULTI)
ACCOUNTS_PER_DEVICE = 3


@dataclass
class SimWorker:
    index: int
    kind: str
    accuracy: float  # for honest workers; others answer by their rule
    median_seconds: float
    fingerprint: str
    ip: str
    group: int | None = None  # ring or device shared with other accounts
    constant: int | None = None  # a spammer's answer
    # set by the driver
    account: object | None = field(default=None, repr=False)
    worker_id: int | None = None
    judgments: int = 0
    stopped: bool = False
    caught_by: str | None = None  # the first action that counted as caught
    confirmed: bool = False  # a reviewer confirmed the engine's finding
    caught_after: int | None = None  # judgments when the platform stopped the worker

    @property
    def is_fraud(self) -> bool:
        return self.kind != HONEST

    def time_on_task(self, rng: random.Random) -> float:
        if self.kind == SPEED_GAMER:
            return rng.uniform(1.0, 2.0)
        return max(1.0, rng.lognormvariate(math.log(self.median_seconds), 0.45))

    def answer(self, truth: int, n_labels: int, rng: random.Random, shared: dict) -> int:
        """The label index this worker gives on a task (`shared`: answers of rings/devices)."""
        if self.kind == HONEST:
            if rng.random() < self.accuracy:
                return truth
            return rng.choice([label for label in range(n_labels) if label != truth])
        if self.kind == SPAMMER:
            return self.constant
        if self.kind in (RING, MULTI):
            # the first member to reach a task answers at random; the others copy it
            return shared.setdefault(self.group, rng.randrange(n_labels))
        return rng.randrange(n_labels)  # clickers and speed gamers


def build_crowd(
    size: int, fraud_share: float, n_labels: int, rng: random.Random
) -> list[SimWorker]:
    """`size` workers, `fraud_share` of them fraudsters split evenly over the fraud kinds."""
    frauds = round(size * fraud_share)
    kinds = [FRAUD_KINDS[i % len(FRAUD_KINDS)] for i in range(frauds)]
    kinds += [HONEST] * (size - frauds)
    rng.shuffle(kinds)
    workers: list[SimWorker] = []
    devices: dict[int, int] = {}
    multi_seen = 0
    for index, kind in enumerate(kinds):
        fingerprint, ip, group, constant = (
            f"device-{index}",
            f"10.0.{index // 250}.{index % 250}",
            None,
            None,
        )
        accuracy = 1.0 / n_labels
        median = rng.lognormvariate(math.log(12.0), 0.35)
        if kind == HONEST:
            accuracy = 0.6 + 0.35 * rng.betavariate(4.0, 2.0)  # 0.6–0.95, mean ≈ 0.83
        elif kind == CLICKER:
            median = rng.lognormvariate(math.log(5.0), 0.3)
        elif kind == SPAMMER:
            constant = rng.randrange(n_labels)
            median = rng.lognormvariate(math.log(4.0), 0.3)
        elif kind == RING:
            group = -1  # one ring
            median = rng.lognormvariate(math.log(6.0), 0.3)
        elif kind == MULTI:
            group = multi_seen // ACCOUNTS_PER_DEVICE
            multi_seen += 1
            first = devices.setdefault(group, index)
            fingerprint, ip = f"device-{first}", f"10.0.{first // 250}.{first % 250}"
            median = rng.lognormvariate(math.log(5.0), 0.3)
        workers.append(SimWorker(index, kind, accuracy, median, fingerprint, ip, group, constant))
    return workers
