"""The simulator's runs: a lively population of NSML runs and how each one's life goes.

Projects (one with a non-ASCII name, as Korean teams use), notebooks and trainings, several
creators, and runs that wait, run, and then complete, fail or are stopped as time passes; some
notebooks are forgotten and never end.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

PENDING = "RUN_STATE_PENDING"
IN_PROGRESS = "RUN_STATE_IN_PROGRESS"
COMPLETED = "RUN_STATE_COMPLETED"
FAILED = "RUN_STATE_FAILED"
STOPPED = "RUN_STATE_STOPPED"

PROJECTS = (
    ("k3x9ygz0iujnq2w4e6r8", "vision-research"),
    ("m1n2b3v4c5x6z7l8k9j0", "llm-pretrain"),
    ("a7s8d9f0g1h2j3k4l5q6", "음성인식-팀"),  # a non-ASCII project name, as Korean teams use
    ("p0o9i8u7y6t5r4e3w2q1", "recsys"),
)
CREATORS = tuple(f"ncp-user-{n}" for n in (2689076, 1183402, 5520931, 7741205, 3309818))


@dataclass(frozen=True, slots=True)
class SimRun:
    """A run's whole life: when it is created, how long it waits, runs, and how it ends."""

    project_id: str
    project_name: str
    run_name: str
    run_type: str
    creator: str
    created: float
    pending: float
    duration: float | None  # None: never ends (a forgotten notebook)
    outcome: str

    def state(self, now: float) -> tuple[str, float]:
        """(status, updateTime) at `now`."""
        started = self.created + self.pending
        if now < started:
            return PENDING, self.created
        if self.duration is None or now < started + self.duration:
            return IN_PROGRESS, started
        return self.outcome, started + self.duration


def generate_population(
    count: int,
    now: float,
    *,
    seed: int = 7,
    span: float = 3 * 86400,
    future_rate: float = 0.0,
    future_span: float = 86400,
    forgotten: bool = True,
) -> list[SimRun]:
    """`count` runs created over the last `span` seconds, plus new ones every 1/`future_rate` s.
    Some notebooks are `forgotten` (never end) unless told otherwise."""
    rng = random.Random(seed)
    times = sorted(now - rng.uniform(0, span) for _ in range(count))
    if future_rate > 0:
        moment = now
        while moment < now + future_span:
            moment += rng.expovariate(future_rate)
            times.append(moment)
    serial: Counter[str] = Counter()
    runs = []
    for created in times:
        project_id, project_name = rng.choice(PROJECTS)
        serial[project_id] += 1
        notebook = rng.random() < 0.4
        roll = rng.random()
        if notebook:
            duration = None if roll < 0.15 and forgotten else rng.uniform(600, 8 * 3600)
            outcome = STOPPED if rng.random() < 0.7 else COMPLETED
        else:
            duration = rng.uniform(120, 12 * 3600)
            outcome = FAILED if roll < 0.2 else STOPPED if roll < 0.25 else COMPLETED
        runs.append(
            SimRun(
                project_id=project_id,
                project_name=project_name,
                run_name=str(serial[project_id]),
                run_type="NOTEBOOK" if notebook else "TRAIN",
                creator=rng.choice(CREATORS),
                created=float(int(created)),
                pending=float(rng.choice((0, 5, 30, 120))),
                duration=duration,
                outcome=outcome,
            )
        )
    return runs
