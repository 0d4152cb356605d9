"""The mount's watchdog: a hang is never silent, and never keeps the daemon alive.

- Every FUSE request encfs is answering is noted (operation, path, start); one still
  unanswered after the bound is logged, once, with how long it has waited.
- A request stuck inside libfuse before it reaches encfs is invisible there, so the
  kernel's count of requests sent and not answered (/sys/fs/fuse/connections/N/
  waiting) is watched too: non-zero for longer than the bound while encfs answers
  nothing is logged, and noted for `encfs umount` (connection.note_stuck), which
  otherwise sees a daemon that answers and would not abort the connection.
- Once libfuse is asked to stop (SIGTERM, unmount) and has not stopped within the
  bound, a worker is stuck: the mount's own FUSE connection is aborted (every waiting
  request fails, so the callers are freed), and if that does not end the daemon
  either, committed changes are flushed and the process exits.

The bound is REQUEST_SECONDS, or the environment variable ENCFS_REQUEST_SECONDS read
at start (tests use about a second)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from encfs.fs import connection

log = logging.getLogger("encfs")

REQUEST_SECONDS = 30.0
BOUND_VARIABLE = "ENCFS_REQUEST_SECONDS"
STOP_SECONDS = 10.0  # asked to stop and still running this long: a worker is stuck


def request_bound() -> float:
    try:
        return max(0.1, float(os.environ.get(BOUND_VARIABLE, REQUEST_SECONDS)))
    except ValueError:
        log.warning("%s is not a number of seconds: %s used", BOUND_VARIABLE, REQUEST_SECONDS)
        return REQUEST_SECONDS


class Watchdog:
    def __init__(self, mountpoint: Path, bound: float | None = None) -> None:
        self.mountpoint = mountpoint
        self.bound = request_bound() if bound is None else bound
        self.in_flight: dict[int, tuple[str, Any, float]] = {}
        self._reported: set[tuple[int, float]] = set()
        self._kernel_waiting_since: float | None = None
        self._kernel_reported = False
        self._number: str | None = None

    def started(self, operation: str, argument: Any) -> None:
        """A request is being answered by this thread (one at a time per thread)."""
        self.in_flight[threading.get_ident()] = (operation, argument, time.monotonic())

    def finished(self) -> None:
        self.in_flight.pop(threading.get_ident(), None)

    def watch(self, stop: threading.Event, exiting: Callable[[], bool],
              on_stuck_exit: Callable[[], None]) -> None:
        """Check every fraction of the bound until stop is set."""
        try:
            self._watch(stop, exiting, on_stuck_exit)
        finally:
            if self._kernel_reported and self._number is not None:
                connection.clear_stuck(self._number)

    def _watch(self, stop: threading.Event, exiting: Callable[[], bool],
               on_stuck_exit: Callable[[], None]) -> None:
        number: str | None = None
        exit_asked: float | None = None
        while not stop.wait(min(1.0, self.bound / 4)):
            now = time.monotonic()
            self._check_requests(now)
            if number is None:
                number = connection.connection_number(self.mountpoint) if connection.visible() else None
                self._number = number
            if number is not None:
                self._check_kernel(number, now)
            if exit_asked is None and exiting():
                exit_asked = now
            if exit_asked is not None and now - exit_asked > min(self.bound, STOP_SECONDS):
                on_stuck_exit()
                exit_asked = float("inf")

    def _check_requests(self, now: float) -> None:
        for ident, (operation, argument, since) in list(self.in_flight.items()):
            if now - since > self.bound and (ident, since) not in self._reported:
                self._reported.add((ident, since))
                log.warning("FUSE request %s %s not answered after %.0f s (still waiting)",
                            operation.removesuffix("_fuse_3"), _printable(argument), now - since)

    def _check_kernel(self, number: str, now: float) -> None:
        waiting = connection.waiting_requests(number)
        if not waiting or self.in_flight:
            if self._kernel_reported:
                connection.clear_stuck(number)
            self._kernel_waiting_since, self._kernel_reported = None, False
            return
        if self._kernel_waiting_since is None:
            self._kernel_waiting_since = now
        elif now - self._kernel_waiting_since > self.bound and not self._kernel_reported:
            self._kernel_reported = True
            log.warning("%d FUSE request(s) on %s not answered after %.0f s and none of them in encfs: "
                        "stuck inside libfuse (encfs umount %s frees the mount)", waiting,
                        self.mountpoint, now - self._kernel_waiting_since, self.mountpoint)
            connection.note_stuck(number, self.mountpoint)


def _printable(argument: Any) -> str:
    if isinstance(argument, bytes):
        return argument.decode(errors="replace")
    return argument if isinstance(argument, str) else ""
