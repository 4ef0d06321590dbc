"""A mutation sample of the code a change wrote, and its runner: `python -m tests.mutants`.

Each mutant is a one-line bug a user would notice, placed by replacing `old` (which must occur
once in the file) with `new`; the runner runs the test files named for it, then puts the line
back, whatever happens. A mutant is caught when those tests fail. Not a test itself (pytest does
not collect this file): a sample to run again after changing the code it names.

    python -m tests.mutants              # every mutant
    python -m tests.mutants history      # those whose file or bug names this word
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    path: str
    old: str
    new: str
    bug: str
    tests: tuple[str, ...]


PAGING = ("tests/test_paging.py",)
HISTORY = ("tests/test_history.py",)
SNAPSHOT = ("tests/test_snapshot.py", "tests/test_history.py")

#: Issue 21: the history read in the background, the head, the order, the page size.
MUTANTS = (
    Mutant(
        "exporter/nsml/paging.py",
        '(name == "0" or name[0] != "0")',
        "True",
        '"01" kept as the number 1: two runs merged',
        PAGING,
    ),
    Mutant(
        "exporter/nsml/paging.py",
        "        if name in names:\n            return False",
        "        if name in names:\n            return True",
        "a run seen twice across a page shift counted twice",
        PAGING + HISTORY,
    ),
    Mutant(
        "exporter/nsml/paging.py",
        "if any(newer < older for newer, older in pairwise(times)):",
        "if any(newer > older for newer, older in pairwise(times)):",
        "the order check inverted within pages",
        PAGING + HISTORY,
    ),
    Mutant(
        "exporter/nsml/paging.py",
        "first_new is not None and first_new > self._last:",
        "first_new is not None and first_new < self._last:",
        "the order check inverted at the seams",
        PAGING + HISTORY,
    ),
    Mutant(
        "exporter/nsml/paging.py",
        "if k not in self._previous)",
        "if True)",
        "a run pushed from the previous page read as disorder",
        PAGING + HISTORY,
    ),
    Mutant(
        "exporter/nsml/paging.py",
        "            return\n        times = [self._created(run) for run in runs]",
        "            return\n        return\n        times = [self._created(run) for run in runs]",
        "the order check skipped",
        PAGING + HISTORY,
    ),
    Mutant(
        "exporter/nsml/paging.py",
        "            if created(run) < since:",
        "            if created(run) <= since:",
        "a run created in the view's newest second, after the read, lost",
        PAGING + HISTORY,
    ),
    Mutant(
        "exporter/nsml/paging.py",
        "if not known(key) and seen.add(key):",
        "if seen.add(key):",
        "a run the view has taken again by the head read",
        PAGING + HISTORY,
    ),
    Mutant(
        "exporter/nsml/paging.py",
        "        if older or not runs or len(runs) < step:",
        "        if not runs or len(runs) < step:",
        "the head read not stopping at the view's newest run",
        PAGING + HISTORY,
    ),
    Mutant(
        "exporter/nsml/paging.py",
        "            step = len(got)\n",
        "            pass\n",
        "a plain list cut at the first page a gateway capped",
        PAGING,
    ),
    Mutant(
        "exporter/nsml/paging.py",
        "        if len(got) < step or len(items) >= total:",
        "        if len(items) >= total:",
        "a lying totalCount costs page after page",
        PAGING,
    ),
    Mutant(
        "exporter/collection/snapshot.py",
        "        if created >= self.newest_created:",
        "        if created > self.newest_created:",
        "the view's newest second holds one run only",
        SNAPSHOT,
    ),
    Mutant(
        "exporter/collection/snapshot.py",
        "            for key in mine.keys() | theirs.keys():",
        "            for key in mine.keys():",
        "a histogram of the head's runs dropped in the merge",
        SNAPSHOT,
    ),
    Mutant(
        "exporter/collection/snapshot.py",
        "        self._prune()\n        return Snapshot(",
        "        return Snapshot(",
        "series past MAX_RUN_SERIES when few runs are eligible",
        SNAPSHOT,
    ),
    Mutant(
        "exporter/collection/snapshot.py",
        "            both.newest[project_id] = max(created, both.newest.get(project_id, -inf))",
        "            both.newest[project_id] = created",
        "a project's newest run taken from the head even when older",
        SNAPSHOT,
    ),
    Mutant(
        "exporter/collection/snapshot.py",
        "omitted=max(0, self.eligible - self.rules.max_run_series),",
        "omitted=max(0, len(self.series) - self.rules.max_run_series),",
        "omitted runs not counted once pruned",
        (*SNAPSHOT, "tests/test_collector.py"),
    ),
    Mutant(
        "exporter/collection/history.py",
        "        if self._setting == SCRAPE or self._once:",
        "        if self._once:",
        "COLLECTION_MODE=scrape ignored",
        HISTORY,
    ),
    Mutant(
        "exporter/collection/history.py",
        "                if read.seconds > SWITCH_AT * self._timeout:",
        "                if read.seconds < SWITCH_AT * self._timeout:",
        "a short read moving to the background, a long one not",
        HISTORY,
    ),
    Mutant(
        "exporter/collection/history.py",
        "            if estimate < SWITCH_BACK * self._timeout:",
        "            if estimate > SWITCH_BACK * self._timeout:",
        "the way back to the scrape taken while reads would not fit",
        HISTORY,
    ),
    Mutant(
        "exporter/collection/history.py",
        "        return self._serve(view, head=bool(self._newest_first))",
        "        return self._serve(view, head=False)",
        "new runs wait for the next full read",
        HISTORY,
    ),
    Mutant(
        "exporter/collection/history.py",
        "        if self._failure is not None:  # until the next full read's first page answers",
        "        if False:",
        "the last view served with nsml_up 1 while the API fails",
        HISTORY,
    ),
    Mutant(
        "exporter/collection/history.py",
        "        tally = Tally(self._rules, started)\n",
        "        tally = self._view.tally if self._view else Tally(self._rules, started)\n",
        "a deleted run kept: each read added to the last view",
        HISTORY,
    ),
    Mutant(
        "exporter/collection/history.py",
        "        def take(run: Run) -> None:\n            self._failure = None",
        "        def take(run: Run) -> None:\n            pass",
        "nsml_up stays 0 after the API comes back",
        HISTORY,
    ),
    Mutant(
        "exporter/collection/history.py",
        "            if not done.wait(self._timeout + GRACE):",
        "            if not done.wait(self._timeout + GRACE) and False:",
        "a read over COLLECT_TIMEOUT never moves to the background",
        HISTORY,
    ),
    Mutant(
        "exporter/nsml/client.py",
        "self._tokens + (now - self._at) * self._rate)",
        "self._tokens)",
        "the request budget never refilled",
        HISTORY,
    ),
    Mutant(
        "exporter/nsml/client.py",
        "            self._tokens = min(self._burst, ",
        "            self._tokens = max(self._burst, ",
        "bursts beyond the budget",
        HISTORY,
    ),
    Mutant(
        "exporter/nsml/client.py",
        "            self.api.page_size = FALLBACK_PAGE_SIZE\n",
        "",
        "a 400 for large pages failing every read",
        HISTORY,
    ),
    Mutant(
        "exporter/collection/collector.py",
        '"the first full read is under way"), warming=True',
        '"the first full read is under way"), warming=False',
        "warming up not said",
        HISTORY,
    ),
    Mutant(
        "exporter/collection/collector.py",
        "        except ReadFailed as error:  # counted and logged by the background read\n"
        "            return self._failure(started, str(error))",
        "        except ReadFailed as error:  # counted and logged by the background read\n"
        "            self._count(error)\n            return self._failure(started, str(error))",
        "a background failure counted again on every scrape",
        HISTORY,
    ),
    Mutant(
        "exporter/collection/health_families.py",
        "value=max(0.0, snap.finished - snap.view_started),",
        "value=max(0.0, snap.finished - snap.full_read_seconds),",
        "the view's age from the wrong field",
        HISTORY,
    ),
    Mutant(
        "exporter/collection/health_families.py",
        "        mode.add_metric([name], 1 if snap.mode == name else 0)",
        "        mode.add_metric([name], 1 if snap.mode != name else 0)",
        "the mode metric inverted",
        HISTORY,
    ),
)


HOSTILE = ("tests/test_server_hostile.py",)
NEGOTIATION = ("tests/test_negotiation.py",)
DETAILS = ("tests/test_details.py",)

#: Issue 22: hostile and careless inputs, round 3.
MUTANTS += (
    Mutant(
        "exporter/web/handler.py",
        "        if self.counted > self._limit:",
        "        if self.counted >= self._limit:",
        "the header bound off by one",
        HOSTILE,
    ),
    Mutant(
        "exporter/web/handler.py",
        "        self.reader.start()\n",
        "",
        "header bytes never counted: any size read and negotiated",
        HOSTILE,
    ),
    Mutant(
        "exporter/web/handler.py",
        '        if self.reader.last == b"":',
        "        if False:",
        "a request cut before its blank line answered",
        HOSTILE,
    ),
    Mutant(
        "exporter/web/handler.py",
        "        if not self.raw_requestline.strip():",
        "        if False:",
        "five empty lines closed with no status line",
        HOSTILE,
    ),
    Mutant(
        "exporter/web/handler.py",
        'any("\\n" in v or "\\0" in v for v in headers.values())',
        'any("\\n" in v for v in headers.values())',
        "a NUL in a header value accepted",
        HOSTILE,
    ),
    Mutant(
        "exporter/web/handler.py",
        'SINGLETONS = ("Host", "Authorization", "Content-Length")',
        'SINGLETONS = ("Host", "Content-Length")',
        "two Authorization lines: the first wins",
        HOSTILE,
    ),
    Mutant(
        "exporter/web/handler.py",
        'if host is None and self.request_version == "HTTP/1.1":',
        'if host is None and self.request_version == "HTTP/1.0":',
        "HTTP/1.1 without Host answered",
        HOSTILE,
    ),
    Mutant(
        "exporter/web/handler.py",
        "not HOST.fullmatch(host.strip())",
        "not HOST.match(host.strip())",
        "an invalid Host taken for its valid start",
        HOSTILE,
    ),
    Mutant(
        "exporter/web/handler.py",
        '        if "close" in self._tokens("Connection"):',
        '        if self.headers.get("Connection", "").lower() == "close":',
        "Connection: keep-alive, close held open",
        HOSTILE,
    ),
    Mutant(
        "exporter/web/negotiation.py",
        "                    continue  # an empty parameter",
        "                    break  # an empty parameter",
        "parameters after an empty one dropped",
        NEGOTIATION,
    ),
    Mutant(
        "exporter/web/negotiation.py",
        '(?:,|$)|.*", re.DOTALL)',
        '(?:,|$)", re.DOTALL)',
        "an unbalanced quote raises (no status line)",
        NEGOTIATION + HOSTILE,
    ),
    Mutant(
        "exporter/web/negotiation.py",
        "labels={_dots(key): value for key, value in sample.labels.items()},",
        "labels=dict(sample.labels),",
        "label names not escaped under dots",
        NEGOTIATION,
    ),
    Mutant(
        "exporter/web/negotiation.py",
        "name=name + sample.name[len(family.name) :],",
        "name=_dots(sample.name),",
        "the sample's suffix escaped under dots",
        NEGOTIATION,
    ),
    Mutant(
        "exporter/collection/details.py",
        "delay = min(RETRY_CAP, RETRY_BASE * 2 ** (count - 1))",
        "delay = min(RETRY_CAP, RETRY_BASE)",
        "the back-off of a failing read not doubled",
        DETAILS,
    ),
    Mutant(
        "exporter/collection/details.py",
        "if read not in failing or now >= failing[read][1]]",
        "if True]",
        "runs that keep failing starve the rest",
        DETAILS,
    ),
    Mutant(
        "exporter/collection/details.py",
        "                    if self._gone[key] == versions.get(key):",
        "                    if True:",
        "a gone run never asked again after it changed",
        DETAILS,
    ),
    Mutant(
        "exporter/collection/details.py",
        "if n >= FAILING_AFTER}",
        "if n > FAILING_AFTER}",
        "failing runs named a failure late",
        DETAILS,
    ),
    Mutant(
        "exporter/collection/details.py",
        "                self._nodes.pop(key, None)\n                self._failing.pop(item, None)",
        "                self._failing.pop(item, None)",
        "a run gone (404) keeps its node states",
        DETAILS,
    ),
    Mutant(
        "exporter/nsml/api.py",
        '                if endpoint.name != "runs":',
        "                if False:",
        "a node list that ignores pageSize held whole",
        DETAILS,
    ),
    Mutant(
        "exporter/__main__.py",
        "    for ignored in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):",
        "    for ignored in (signal.SIGUSR2,):",
        "SIGHUP ends the process mid-scrape",
        HOSTILE,
    ),
    Mutant(
        "exporter/__main__.py",
        "            server.hurry.set()\n",
        "",
        "a second SIGTERM does not end the grace",
        HOSTILE,
    ),
    Mutant(
        "exporter/web/server.py",
        "            while not self.hurry.is_set() and time.monotonic() < ends:",
        "            while time.monotonic() < ends:",
        "the grace waited out whatever the signals",
        HOSTILE,
    ),
)


RELEASE = ("tests/test_release.py",)

#: Issue 23: releases (`python -m tests.mutants release`).
MUTANTS += (
    Mutant(
        "exporter/__init__.py",
        '_node.removeprefix("g") if',
        "_node if",
        "release: the revision is git's node, not the commit",
        RELEASE,
    ),
    Mutant(
        "exporter/collection/health_families.py",
        "info.add_metric([__version__, __revision__, platform.python_version()], 1)",
        "info.add_metric([__revision__, __version__, platform.python_version()], 1)",
        "release: version and revision swapped in build_info",
        RELEASE,
    ),
    Mutant(
        "Dockerfile",
        "--require-hashes --no-deps \\\n        -r requirements.lock",
        "--no-deps \\\n        -r requirements.lock",
        "release: the runtime lock installed without its hashes",
        ("tests/test_docker.py::test_image_shape",),
    ),
    Mutant(
        "Dockerfile",
        'org.opencontainers.image.version="$VERSION"',
        'org.opencontainers.image.version="$REVISION"',
        "release: the image's version label from the wrong argument",
        ("tests/test_docker.py",),
    ),
    Mutant(
        ".github/changelog-section",
        "  found && /^## \\[/ { exit }\n",
        "",
        "release: the notes run on into older releases",
        RELEASE,
    ),
    Mutant(
        "helm/nsml-exporter/values.yaml",
        "  repository: ghcr.io/nsml-exporter/nsml-exporter",
        "  repository: nsml-exporter",
        "release: the chart's default image is no published one",
        RELEASE,
    ),
)


def run(mutant: Mutant) -> bool:
    """True when the tests catch `mutant`."""
    path = ROOT / mutant.path
    original = path.read_text()
    if original.count(mutant.old) != 1:
        raise SystemExit(f"{mutant.path}: {mutant.old!r} is not there exactly once")
    path.write_text(original.replace(mutant.old, mutant.new))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests],
            cwd=ROOT,
            capture_output=True,
            timeout=600,
            check=False,
        )
        return done.returncode != 0
    finally:
        path.write_text(original)


def main() -> None:
    word = sys.argv[1] if len(sys.argv) > 1 else ""
    chosen = [m for m in MUTANTS if word in m.path or word in m.bug]
    caught = 0
    for mutant in chosen:
        started = time.monotonic()
        ok = run(mutant)
        caught += ok
        took = time.monotonic() - started
        print(f"{'caught  ' if ok else 'SURVIVED'} {took:5.1f}s {mutant.path}: {mutant.bug}")
    print(f"\n{caught} of {len(chosen)} caught ({100 * caught / max(1, len(chosen)):.0f}%)")


if __name__ == "__main__":
    main()
