"""Logging set-up: one line per refusal or fault, in the store's log file.

The log is private (0600), rotated at LOG_MAX_BYTES (encfs.log.1 … .3 are kept;
$ENCFS_LOG_MAX_BYTES changes the cap), and keeps a little disk space allocated ahead
of its end, so that the line saying the disk is full can still be written. Every
process that uses the store writes to it: a process notices that another one rotated
the file and follows it to the new one.
"""

from __future__ import annotations

import ctypes
import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import Any

FORMAT = "%(asctime)s %(process)d %(levelname)s %(message)s"
LOG_MAX_BYTES = 10 << 20
LOG_GENERATIONS = 3
AHEAD = 64 << 10  # bytes kept allocated past the end of the log
FALLOC_FL_KEEP_SIZE = 1

_libc = ctypes.CDLL(None, use_errno=True)  # the C library this process runs with


def log_max_bytes() -> int:
    try:
        return max(1024, int(os.environ.get("ENCFS_LOG_MAX_BYTES", LOG_MAX_BYTES)))
    except ValueError:
        return LOG_MAX_BYTES


class StoreLogHandler(logging.handlers.RotatingFileHandler):
    """A rotating, private log that several processes append to."""

    def __init__(self, log_file: Path) -> None:
        self._allocated_to = 0
        super().__init__(log_file, maxBytes=log_max_bytes(), backupCount=LOG_GENERATIONS,
                         encoding="utf-8", errors="backslashreplace")  # names that are not UTF-8
        self.setFormatter(logging.Formatter(FORMAT))

    def _open(self):  # type: ignore[no-untyped-def]
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._allocated_to = 0
        stream = open(fd, "a", encoding=self.encoding, errors=self.errors)  # noqa: SIM115 - the handler keeps it
        self._allocate_ahead(stream)
        return stream

    def emit(self, record: logging.LogRecord) -> None:
        self._follow_rotation()
        super().emit(record)
        if self.stream is not None:
            self._allocate_ahead(self.stream)

    def _follow_rotation(self) -> None:
        """Another process rotated (or someone removed) the file: write to the new one."""
        if self.stream is None:
            return
        try:
            current = os.stat(self.baseFilename)
            mine = os.fstat(self.stream.fileno())
        except FileNotFoundError:
            current = None
        except OSError:
            return
        if current is None or (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
            self.stream.close()
            self.stream = None  # reopened by the next write

    def _allocate_ahead(self, stream: Any) -> None:
        """Keep AHEAD bytes allocated past the end (without changing the file's size)."""
        try:
            end = os.fstat(stream.fileno()).st_size
        except OSError:
            return
        if end + AHEAD // 2 <= self._allocated_to:
            return
        if _libc.fallocate(stream.fileno(), FALLOC_FL_KEEP_SIZE, ctypes.c_long(end),
                           ctypes.c_long(AHEAD)) == 0:
            self._allocated_to = end + AHEAD

    def handleError(self, record: logging.LogRecord) -> None:
        """A line that cannot be written (a full disk) is dropped, without a traceback."""


def setup_logging(log_file: Path, to_stderr: bool) -> None:
    logger = logging.getLogger("encfs")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    logger.addHandler(StoreLogHandler(log_file))
    if to_stderr:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(stream)


def note_in_log(log_file: Path, message: str) -> None:
    """One warning line in the store's log, whether or not this process logs there."""
    if not log_file.parent.is_dir():
        return
    try:
        handler = StoreLogHandler(log_file)
    except OSError:  # a store this user may not write: the warning on stderr is all
        return
    try:
        handler.handle(logging.LogRecord("encfs", logging.WARNING, __file__, 0, message, None, None))
    finally:
        handler.close()
