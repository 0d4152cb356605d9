"""Import by reference: an Encord JSON spec, or every object under a prefix, becomes
items that refer to the objects (nothing is copied).

A job runs in three steps: check every entry (URLs inside the integration's bucket,
duplicates), examine the objects in parallel (HEAD or ranged reads of the headers;
nothing at all for metadata the spec gives), then make the items in batches, one
transaction each. Without `ignore_errors` the first error stops the job before
anything is made; with it, the entries that failed are reported and the rest
imported. What was made stays if the job is interrupted; a re-run with
`skip_duplicate_urls` skips it and completes the job.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from encfs.cloud.integrations import Integration, ObjectUrl, Unreachable, parse_url
from encfs.cloud.items import NewReference
from encfs.cloud.listing import list_objects, read_sidecar, split_sidecars
from encfs.cloud.probing import Found, examine
from encfs.cloud.spec import SECTION_ORDER, Entry, Spec
from encfs.errors import EncfsError, InvalidInput, NotFound
from encfs.model import Actor, Folder, Kind
from encfs.names import check_name

if TYPE_CHECKING:
    from encfs.service import FilesService

log = logging.getLogger("encfs")
WORKERS = 16
BATCH = 1000  # entries made per transaction
CHUNK = 500  # entries examined before the next are submitted (bounded memory, early batches)


@dataclass
class Progress:
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0


@dataclass
class Failure:
    where: str
    url: str
    error: str

    def line(self) -> str:
        return json.dumps({"where": self.where, "url": self.url, "error": self.error})


@dataclass
class Outcome:
    progress: Progress
    failures: list[Failure] = field(default_factory=list)
    duplicates: int = 0  # URLs imported more than once (skip_duplicate_urls false)
    interrupted: bool = False
    stopped: str = ""  # why the job stopped before the end (the storage service went away)
    report: Path | None = None


class ImportFailed(InvalidInput):
    """Without --ignore-errors: the first error, and nothing was imported."""


@dataclass
class Examined:
    entry: Entry
    found: list[Found]


class Importer:
    def __init__(self, service: FilesService, actor: Actor, folder: str, integration: Integration,
                 ignore_errors: bool = False, report: Path | None = None,
                 on_progress: Callable[[Progress], None] = lambda p: None, workers: int = WORKERS) -> None:
        self.service = service
        self.actor = actor
        self.folder = folder
        self.integration = integration
        self.ignore_errors = ignore_errors
        self.report = report
        self.on_progress = on_progress
        self.workers = workers
        self.outcome = Outcome(Progress())

    # ------------------------------------------------------------- the two sources

    def import_spec(self, spec: Spec) -> Outcome:
        self._check_folder()
        entries = self._checked_entries(spec)
        return self._run(entries, spec.skip_duplicate_urls, spec.upsert_metadata)

    def import_prefix(self, url: str) -> Outcome:
        """Every object under the prefix, kept in its folders; sidecars
        (`NAME.metadata.json`) become NAME's client metadata. URLs imported already
        are skipped, so a re-run completes an interrupted import."""
        self._check_folder()
        where = parse_url(url, "prefix")
        if not self.integration.covers(ObjectUrl(where.bucket, where.key + ("/" if where.key else ""))):
            raise InvalidInput(f"{url} is outside integration {self.integration.name} "
                               f"({self.integration.url})")
        objects, sidecars = split_sidecars(list(list_objects(self.integration, where)))
        entries = []
        for n, listed in enumerate(objects):
            entry = Entry("objects", n, None, [str(listed.url)], title=listed.name, size=listed.size,
                          folders=listed.folders, etag=listed.etag)
            try:
                for part in [*listed.folders, listed.name]:
                    check_name(part)
            except EncfsError as exc:
                self._fail(entry, str(listed.url), exc)
                continue
            sidecar = sidecars.get(listed.relative)
            if sidecar is not None:
                try:
                    entry.client_metadata = read_sidecar(self.integration, sidecar)
                    self.service.metadata_schema.check(entry.client_metadata, str(sidecar.url))
                except EncfsError as exc:
                    self._fail(entry, str(sidecar.url), exc)
                    continue
            entries.append(entry)
        self.outcome.progress.total = len(objects)
        return self._run(entries, skip_duplicates=True, upsert=False)

    # ------------------------------------------------------------- steps

    def _check_folder(self) -> None:
        if not isinstance(self.service.lookup(self.actor, self.folder), Folder):
            raise InvalidInput("the import target must be a folder", self.folder)

    def _checked_entries(self, spec: Spec) -> list[Entry]:
        """Entries whose URLs are in the integration's bucket and whose names are valid;
        the spec's own errors are failures too."""
        self.outcome.progress.total = len(spec.entries) + len(spec.errors)
        failures = [(e.where, e.url, e) for e in spec.errors]
        good = []
        for entry in spec.entries:
            try:
                self._check_entry(entry)
                good.append(entry)
            except EncfsError as exc:
                failures.append((entry.where, entry.urls[0] if entry.urls else "", exc))
        failures.sort(key=lambda f: _order(f[0]))
        if failures and not self.ignore_errors:
            where, _, exc = failures[0]
            raise ImportFailed(_first_error(where, exc, len(failures)))
        for where, url, exc in failures:
            self._record(Failure(where, url, exc.reason if isinstance(exc, EncfsError) else str(exc)))
        return good

    def _check_entry(self, entry: Entry) -> None:
        """Checks an entry and names its objects by their s3:// URLs (an https URL of an
        object in the integration's bucket becomes the same s3:// URL)."""
        resolved = []
        for url in entry.urls:
            parsed = self.integration.object_url(url)
            if not parsed.key or parsed.key.endswith("/"):
                raise InvalidInput(f"{url} names a bucket or folder, not an object")
            if not self.integration.covers(parsed):
                raise InvalidInput(f"{url} is outside integration {self.integration.name} "
                                   f"({self.integration.url})")
            resolved.append(str(parsed))
        entry.urls = resolved
        check_name(entry.title or _basename(entry.urls[0]))
        self.service.metadata_schema.check(entry.client_metadata, entry.urls[0] if entry.urls else "")

    def _run(self, entries: list[Entry], skip_duplicates: bool, upsert: bool) -> Outcome:
        try:
            entries = self._without_duplicates(entries, skip_duplicates, upsert)
            if self.ignore_errors:
                for chunk in _chunks(entries, CHUNK):
                    self._make(self._examine(chunk))
                    if self.outcome.stopped:
                        break
            else:
                examined = self._examine(entries)
                if self.outcome.failures:
                    first = self.outcome.failures[0]
                    raise ImportFailed(_first_error(first.where, first.error, len(self.outcome.failures)))
                self._make(examined)
        except KeyboardInterrupt:
            self.outcome.interrupted = True
            log.warning("import into %s interrupted: %d imported so far", self.folder,
                        self.outcome.progress.done)
        finally:
            self._write_report()
        return self.outcome

    def _without_duplicates(self, entries: list[Entry], skip: bool, upsert: bool) -> list[Entry]:
        """skip_duplicate_urls: an object URL already imported (or earlier in the spec)
        is skipped; with upsert_metadata its items take the entry's client metadata."""
        seen: set[str] = set()
        kept = []
        for entry in entries:
            url = entry.urls[0]
            if entry.is_group:
                kept.append(entry)
                continue
            if url in seen:
                if skip:
                    self._skip()
                    continue
                self.outcome.duplicates += 1
            seen.add(url)
            existing = self.service.cloud.items_with_url(url) if skip else []
            if existing:
                if upsert and entry.client_metadata:
                    self.service.cloud.set_client_metadata(existing, entry.client_metadata)
                self._skip()
                continue
            kept.append(entry)
        return kept

    def _examine(self, entries: list[Entry]) -> list[Examined]:
        """Examine the objects in parallel; keeps spec order; records failures."""
        results: list[Examined] = []
        with ThreadPoolExecutor(self.workers) as pool:
            futures = [(entry, _done_now(self._examine_entry, entry) if _nothing_to_read(entry)
                        else pool.submit(self._examine_entry, entry)) for entry in entries]
            try:
                for entry, future in futures:
                    outcome = _result(future)
                    if isinstance(outcome, Unreachable):
                        self._stop(entry, outcome)
                        break
                    if isinstance(outcome, Exception):
                        self._fail(entry, getattr(outcome, "url", "") or entry.urls[0], outcome)
                        if not self.ignore_errors:
                            break
                    else:
                        results.append(Examined(entry, outcome))
            except KeyboardInterrupt:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            finally:
                for _, future in futures:
                    future.cancel()
        return results

    def _stop(self, entry: Entry, exc: Unreachable) -> None:
        """The storage service went away: stop at once (what was made stays) rather
        than fail every entry left after the retries of each."""
        self.outcome.stopped = exc.reason
        self._fail(entry, entry.urls[0], exc)
        log.error("import into %s stopped: %s", self.folder, exc.reason)

    def _examine_entry(self, entry: Entry) -> list[Found]:
        found = []
        for url in entry.urls:
            try:
                found.append(examine(self.integration, parse_url(url), entry.kind, entry.trusted, entry.size,
                                     entry.etag))
            except EncfsError as exc:
                exc.url = url  # type: ignore[attr-defined]
                raise
        return found

    def _make(self, examined: list[Examined]) -> None:
        singles = [e for e in examined if not e.entry.is_group]
        for batch in _chunks(singles, BATCH):
            planned = [self._planned(e.entry, e.found[0], e.entry.title or _basename(e.found[0].url),
                                     e.entry.folders) for e in batch]
            self.service.cloud.add(self.actor, self.folder, planned)
            self._done(len(batch))
        for group in (e for e in examined if e.entry.is_group):
            try:
                self._make_group(group)
            except EncfsError as exc:
                if not self.ignore_errors:
                    raise
                self._fail(group.entry, group.entry.urls[0], exc)
            else:
                self._done(1)

    def _planned(self, entry: Entry, found: Found, name: str, folders: list[str]) -> NewReference:
        return NewReference(folders, name, self.integration.name, found.url, found.version, found.media,
                            entry.client_metadata if not entry.is_group else {}, found.dicom)

    def _make_group(self, group: Examined) -> None:
        """An image group or sequence (createVideo), or a DICOM series: its objects in a
        folder named after the title, next to the group item encfs makes from them."""
        entry = group.entry
        title = self._free_title(entry.title or "group")
        width = len(str(len(group.found) - 1))
        planned = []
        for n, found in enumerate(group.found):
            name = _basename(found.url)
            if entry.section == "image_groups":
                name = f"{n:0{width}d}_{name}"  # frames in name order are frames in spec order
            planned.append(self._planned(entry, found, name, [title]))
        self.service.cloud.add(self.actor, self.folder, planned)
        target = f"{self.folder.rstrip('/')}/{title}"
        try:
            if entry.section == "image_groups":
                kind = Kind.IMAGE_SEQUENCE if entry.create_video else Kind.IMAGE_GROUP
                result = self.service.batch_folder(self.actor, target, kind, title)
                for item in result.items:
                    if entry.client_metadata:
                        self.service.cloud.set_client_metadata([item.id], entry.client_metadata)
        except BaseException:
            self.service.remove_folder(self.actor, target, recursive=True)
            raise

    def _free_title(self, title: str) -> str:
        candidate, n = title, 2
        while _exists(self.service, self.actor, f"{self.folder.rstrip('/')}/{candidate}"):
            candidate, n = f"{title} ({n})", n + 1
        return candidate

    # ------------------------------------------------------------- counters and report

    def _done(self, n: int) -> None:
        self.outcome.progress.done += n
        self.on_progress(self.outcome.progress)

    def _skip(self) -> None:
        self.outcome.progress.skipped += 1
        self.on_progress(self.outcome.progress)

    def _fail(self, entry: Entry, url: str, exc: Exception) -> None:
        reason = exc.reason if isinstance(exc, EncfsError) else f"{type(exc).__name__}: {exc}"
        self._record(Failure(entry.where if entry.section != "objects" else url, url, reason))

    def _record(self, failure: Failure) -> None:
        self.outcome.failures.append(failure)
        self.outcome.progress.failed += 1
        self.on_progress(self.outcome.progress)

    def _write_report(self) -> None:
        if not self.outcome.failures or self.report is None:
            return
        self.report.parent.mkdir(parents=True, exist_ok=True)
        with open(self.report, "w") as out:
            for failure in self.outcome.failures:
                out.write(failure.line() + "\n")
        self.outcome.report = self.report


def _nothing_to_read(entry: Entry) -> bool:
    return entry.trusted is not None and entry.size is not None and not entry.is_group


def _done_now(call: Callable[[Entry], Any], entry: Entry) -> Future:
    """The outcome of an examination that asks nothing of the bucket, without a thread."""
    future: Future = Future()
    try:
        future.set_result(call(entry))
    except Exception as exc:
        future.set_exception(exc)
    return future


def _result(future: Future) -> Any:
    try:
        return future.result()
    except EncfsError as exc:
        return exc
    except Exception as exc:  # a fault examining one object fails that entry only
        log.warning("examining an object failed: %s", exc)
        return exc


def _first_error(where: str, exc: Exception | str, count: int) -> str:
    reason = exc.reason if isinstance(exc, EncfsError) else str(exc)
    more = f" ({count - 1} more errors)" if count > 1 else ""
    return (f"{where}: {reason}{more}; nothing was imported "
            "(--ignore-errors imports the rest and reports these)")


def _order(where: str) -> tuple[int, int]:
    """Spec order of `videos[3]`: by section, then index."""
    section, _, index = where.partition("[")
    number = index.split("]")[0]
    return (SECTION_ORDER.index(section) if section in SECTION_ORDER else 99,
            int(number) if number.isdigit() else 0)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _basename(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _exists(service: FilesService, actor: Actor, path: str) -> bool:
    try:
        service.lookup(actor, path)
    except NotFound:
        return False
    return True


def report_path(store_log: Path) -> Path:
    return store_log.parent / time.strftime("import-%Y%m%d-%H%M%S.jsonl")
