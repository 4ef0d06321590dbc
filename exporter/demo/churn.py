"""Activity on a busy account, for the simulator: runs created, finished and deleted as time goes.

Every `every` seconds one run is created (in progress, until churn finishes it), the oldest run
that churn created and left running is finished, and one run of the list is deleted at random.
Together with the population's own life (runs that start, run and end as time passes) this is the
list an exporter reads on a busy account: one that changes between any two pages. `burst` adds
many runs created close together, listed when their time comes.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from .listing import Listing
from .population import COMPLETED, CREATORS, IN_PROGRESS, PROJECTS, SimRun


class Churn:
    """A thread that changes `listing` every `every` seconds; `stop()` ends it."""

    def __init__(
        self,
        listing: Listing,
        every: float,
        clock: Callable[[], float] = time.time,
        seed: int = 11,
    ) -> None:
        self._listing = listing
        self._every = every
        self._clock = clock
        self._rng = random.Random(seed)
        self._open: deque[SimRun] = deque()  # created here and still running
        self._serial = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-churn", daemon=True)
        #: Changes made so far: created, finished, deleted.
        self.created = self.finished = self.deleted = 0

    def start(self) -> Churn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.step(self._clock())

    def step(self, now: float) -> None:
        """One round: a run created, one finished, one deleted."""
        self._serial += 1
        project_id, project_name = self._rng.choice(PROJECTS)
        new = SimRun(
            project_id=project_id,
            project_name=project_name,
            run_name=f"churn-{self._serial}",
            run_type="TRAIN",
            creator=self._rng.choice(CREATORS),
            created=float(int(now)),
            pending=0.0,
            duration=None,
            outcome=COMPLETED,
        )
        self._listing.add([new])
        self.created += 1
        if len(self._open) >= 10:  # the oldest of the runs churn keeps running ends now
            run = self._open.popleft()
            self._listing.replace(replace(run, duration=max(1.0, now - run.created)))
            self.finished += 1
        self._open.append(new)
        victims = self._listing.page(now, 0, 1 << 62)[0]
        if victims:
            gone = self._rng.choice(victims)
            if gone.run_name not in {r.run_name for r in self._open}:
                self._listing.delete([(gone.project_id, gone.run_name)])
                self.deleted += 1


def burst(count: int, start: float, over: float, seed: int = 13) -> list[SimRun]:
    """`count` runs in progress, created evenly between `start` and `start + over`."""
    rng = random.Random(seed)
    return [
        SimRun(
            project_id=(project := rng.choice(PROJECTS))[0],
            project_name=project[1],
            run_name=f"burst-{n}",
            run_type="TRAIN",
            creator=rng.choice(CREATORS),
            created=float(int(start + over * n / max(1, count))),
            pending=0.0,
            duration=None,
            outcome=COMPLETED,
        )
        for n in range(count)
    ]


def truth(listing: Listing, now: float) -> dict[str, int]:
    """The runs listed now, by status, and in all (`listed`)."""
    counts: dict[str, int] = {}
    runs = listing.page(now, 0, 1 << 62)[0]
    for run in runs:
        status = run.state(now)[0]
        counts[status] = counts.get(status, 0) + 1
    counts["listed"] = len(runs)
    counts.setdefault(IN_PROGRESS, 0)
    return counts
