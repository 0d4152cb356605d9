"""Logging set-up: one line per refusal or fault, in the store's log file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(process)d %(levelname)s %(message)s"


def setup_logging(log_file: Path, to_stderr: bool) -> None:
    logger = logging.getLogger("encfs")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(log_file, errors="backslashreplace")  # names not UTF-8
    file_handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(file_handler)
    if to_stderr:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(stream)
