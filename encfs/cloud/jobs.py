"""Imports run in the background (`encfs import … --background`) and what
`encfs import status` shows of them.

A background import is the same `encfs import` command run by a detached child
process (its own session, output to the store's log folder) with `--job ID`; it
writes its state to `STORE/imports/ID.json` as it goes (replaced atomically, at most
twice a second, and once at the end). A job whose file says "running" while its
process is gone was stopped (killed, or the machine restarted): `status` says so,
and running the import again with `skip_duplicate_urls` completes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

FOLDER = "imports"
WRITE_EVERY_SECONDS = 0.5


@dataclass
class Job:
    id: str
    folder: str
    source: str
    pid: int
    state: str = "running"  # running, done, failed, interrupted, stopped (its process is gone)
    started: float = 0.0
    finished: float | None = None
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    report: str | None = None
    message: str = ""

    def line(self) -> str:
        counts = f"{self.done} done, {self.skipped} skipped, {self.failed} failed of {self.total}"
        tail = f"; {self.message}" if self.message else ""
        report = f"; errors: {self.report}" if self.report else ""
        return f"{self.id}  {self.state:<11} {self.folder}  {self.source}  {counts}{report}{tail}"


def jobs_folder(store_root: Path) -> Path:
    return store_root / FOLDER


def write(store_root: Path, job: Job) -> None:
    folder = jobs_folder(store_root)
    folder.mkdir(mode=0o700, exist_ok=True)
    partial = folder / f".{job.id}.json.{os.getpid()}"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the store's files are private
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(asdict(job)))
    os.replace(partial, folder / f"{job.id}.json")


def read(store_root: Path, job_id: str) -> Job | None:
    try:
        raw = json.loads((jobs_folder(store_root) / f"{job_id}.json").read_text())
    except (OSError, ValueError):
        return None
    known = {f.name for f in fields(Job)}
    job = Job(**{k: v for k, v in raw.items() if k in known})
    if job.state == "running" and not _alive(job.pid):
        job.state, job.message = "stopped", "its process is gone: run the import again to complete it"
    return job


def read_all(store_root: Path) -> list[Job]:
    folder = jobs_folder(store_root)
    names = sorted(p.stem for p in folder.glob("*.json")) if folder.exists() else []
    return [job for name in names if (job := read(store_root, name)) is not None]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def start(store_root: Path, log_folder: Path, folder: str, source: str, arguments: list[str]) -> Job:
    """Run `encfs import FOLDER SOURCE ARGUMENTS --job ID` detached; its job file is
    written before this returns (so `status` shows it at once)."""
    job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    log_folder.mkdir(parents=True, exist_ok=True)
    output = os.open(log_folder / f"import-{job_id}.out", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(output, "ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "encfs", "import", folder, source, *arguments, "--job", job_id],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    job = Job(job_id, folder, source, child.pid, started=time.time())
    if read(store_root, job_id) is None:  # the child may have written already
        write(store_root, job)
    return job


class JobRecord:
    """The child's side: its progress and outcome into its job file."""

    def __init__(self, store_root: Path, job_id: str, folder: str, source: str) -> None:
        self.store_root = store_root
        self.job = Job(job_id, folder, source, os.getpid(), started=time.time())
        self._written = 0.0
        write(store_root, self.job)

    def progress(self, progress: Any) -> None:
        job = self.job
        job.total, job.done, job.skipped, job.failed = (progress.total, progress.done, progress.skipped,
                                                        progress.failed)
        if time.monotonic() - self._written >= WRITE_EVERY_SECONDS:
            self._written = time.monotonic()
            write(self.store_root, job)

    def finish(self, outcome: Any | None, message: str = "") -> None:
        job = self.job
        if outcome is not None:
            self.progress(outcome.progress)
            job.report = str(outcome.report) if outcome.report is not None else None
            job.state = "interrupted" if outcome.interrupted or outcome.stopped else (
                "failed" if outcome.progress.failed else "done")
            job.message = outcome.stopped or message
        else:
            job.state, job.message = "failed", message
        job.finished = time.time()
        write(self.store_root, job)
