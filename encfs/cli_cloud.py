"""`encfs integration …`, `encfs import`, `encfs sync`: private cloud data."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from encfs.caller_gate import admitted, local_file_refused
from encfs.cli import fail, files_path, service_for, store_option
from encfs.cloud.jobs import JobRecord
from encfs.errors import EncfsError, InvalidInput
from encfs.model import Actor


@contextmanager
def recorded(service: Any, operation: str, path: str = "") -> Iterator[None]:
    """A refusal is also recorded for the user (`encfs errors`, /.encfs/errors) and logged."""
    try:
        yield
    except EncfsError as exc:
        exc.path = exc.path or path
        service.record_refusal(Actor.local(), operation, exc)
        raise


@click.group()
def integration() -> None:
    """Integrations with S3-compatible buckets (credentials from the AWS chain, never stored)."""


@integration.command("add")
@click.argument("name")
@click.argument("url", metavar="s3://BUCKET[/PREFIX]")
@click.option("--endpoint-url", default=None, help="An S3-compatible service other than AWS.")
@click.option("--profile", default=None, help="The AWS profile whose credentials to use.")
@click.option("--region", default=None, help="The bucket's region.")
@store_option
def integration_add(name: str, url: str, endpoint_url: str | None, profile: str | None, region: str | None,
                    store_dir: Path | None) -> None:
    """Add an integration; the bucket is listed first, and nothing is recorded if that fails."""
    with service_for(store_dir) as service, recorded(service, "integration add", url):
        service = admitted(service, Actor.local(), "integration")
        added = service.cloud.integrations.add(name, url, endpoint_url, profile, region)
        click.echo(f"added integration {added.name}: {added.url}")


@integration.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@store_option
def integration_ls(as_json: bool, store_dir: Path | None) -> None:
    """List the integrations."""
    with service_for(store_dir) as service:
        found = admitted(service, Actor.local(), "integration ls").cloud.integrations.list()
        if as_json:
            click.echo(json.dumps([{"name": i.name, **i.record()} for i in found], indent=2))
            return
        for i in found:
            extra = "".join(f"  {k}={v}" for k, v in (("endpoint", i.endpoint_url), ("profile", i.profile),
                                                      ("region", i.region)) if v)
            click.echo(f"{i.name}  {i.url}{extra}")


@integration.command("rm")
@click.argument("name")
@store_option
def integration_rm(name: str, store_dir: Path | None) -> None:
    """Remove an integration no file or cloud-synced folder uses."""
    with service_for(store_dir) as service:
        admitted(service, Actor.local(), "integration").cloud.integrations.remove(name)
        click.echo(f"removed integration {name}")


@integration.command("check")
@click.argument("name")
@store_option
def integration_check(name: str, store_dir: Path | None) -> None:
    """Check that the integration's bucket can be listed with the current credentials."""
    from encfs.cloud.integrations import check

    with service_for(store_dir) as service:
        found = admitted(service, Actor.local(), "integration").cloud.integrations.get(name)
        check(found)
        click.echo(f"integration {name}: {found.url} can be listed")


@click.command("import")
@click.argument("folder_path", metavar="FOLDER")
@click.argument("source", metavar="SPEC.json|-|s3://BUCKET/PREFIX", required=False)
@click.option("--integration", "integration_name", default=None,
              help="The integration to read through (required).")
@click.option("--ignore-errors", is_flag=True, help="Import what can be imported; report the rest.")
@click.option("--report", type=click.Path(path_type=Path), default=None,
              help="Where to write the per-item errors (JSON lines); default STORE/log/import-TIME.jsonl.")
@click.option("--background", is_flag=True,
              help="Run the import in a process of its own and return; follow it with encfs import status.")
@click.option("--job", "job_id", default=None, hidden=True)
@store_option
def import_command(folder_path: str, source: str | None, integration_name: str | None, ignore_errors: bool,
                   report: Path | None, background: bool, job_id: str | None, store_dir: Path | None) -> None:
    """Import objects by reference (they stay in the bucket): an Encord JSON spec (a
    file, or - for standard input), or every object under an s3:// prefix. `encfs
    import status [JOB]` shows the imports started with --background."""
    if folder_path == "status":
        show_jobs(source, store_dir)
        return
    with service_for(store_dir) as service:
        actor = Actor.local()
        target = files_path(service, folder_path)
        if not integration_name:  # checked after the store opened: a damaged store says so first
            fail(InvalidInput("give the integration to read through: --integration NAME "
                              "(see encfs integration ls)"))
        if not source:
            fail(InvalidInput("give what to import: SPEC.json, - (standard input) or s3://BUCKET/PREFIX"))
        if source != "-" and not source.startswith("s3://"):
            local_file_refused(service, actor, "import", f"{source} (give the spec on standard input: -)")
        if report is not None:
            local_file_refused(service, actor, "import", f"--report {report}")
        if background:
            local_file_refused(service, actor, "import", "--background")
        service = admitted(service, actor, "import", target)
        if background:
            if source == "-":
                fail(InvalidInput("an import in the background reads its spec from a file: give SPEC.json"))
            start_in_background(service, target, source, integration_name, ignore_errors, report)
            return
        record = JobRecord(service.store.path, job_id, target, source) if job_id else None
        try:
            with recorded(service, "import", target):
                outcome = run_import(service, actor, target, source, integration_name, ignore_errors, report,
                                     record.progress if record else None)
        except BaseException as exc:
            if record is not None:
                record.finish(None, str(exc) or type(exc).__name__)
            raise
        if record is not None:
            record.finish(outcome)
        summarise(outcome, target)


def start_in_background(service: Any, target: str, source: str, integration_name: str, ignore_errors: bool,
                        report: Path | None) -> None:
    """What can be refused at once is (the folder, the integration, the spec), then
    the import runs detached."""
    from encfs.cloud import jobs
    from encfs.cloud.spec import load_spec

    with recorded(service, "import", target):
        run_checks(service, target, integration_name)
        if not source.startswith("s3://"):
            load_spec(Path(source))
    arguments = ["--integration", integration_name, "--store", str(service.store.path.absolute())]
    if ignore_errors:
        arguments.append("--ignore-errors")
    if report is not None:
        arguments += ["--report", str(report.absolute())]
    spec = source if source.startswith("s3://") else str(Path(source).absolute())
    job = jobs.start(service.store.path, service.store.log_path.parent, target, spec, arguments)
    click.echo(f"import {job.id} into {target} runs in the background (process {job.pid}): "
               f"encfs import status {job.id}")


def run_checks(service: Any, target: str, integration_name: str) -> None:
    from encfs.model import Folder

    service.cloud.integration(integration_name)
    if not isinstance(service.lookup(Actor.local(), target), Folder):
        raise InvalidInput("the import target must be a folder", target)


def show_jobs(job_id: str | None, store_dir: Path | None) -> None:
    from encfs.cloud import jobs
    from encfs.errors import NotFound

    with service_for(store_dir) as service:
        root = service.store.path
    found = jobs.read_all(root) if job_id is None else [job for job in [jobs.read(root, job_id)] if job]
    if job_id is not None and not found:
        fail(NotFound(f"no background import {job_id} (see encfs import status)"))
    if not found:
        click.echo("no background imports")
    for job in found:
        click.echo(job.line())


def run_import(service: Any, actor: Actor, target: str, source: str, integration_name: str,
               ignore_errors: bool, report: Path | None, also: Any = None) -> Any:
    """The import job, with a progress bar of done, skipped and failed entries
    (`also` is told the progress too: a background job's record)."""
    from encfs.cloud.importer import Importer, report_path
    from encfs.cloud.spec import load_spec, parse_spec_text

    found = service.cloud.integration(integration_name)
    if source == "-":
        spec = parse_spec_text(sys.stdin.read(), "the spec on standard input")
    else:
        spec = None if source.startswith("s3://") else load_spec(Path(source))
    bar = click.progressbar(length=1, label="importing", file=sys.stderr, show_pos=True,
                            item_show_func=lambda p: p)
    with bar:
        def shown(progress: Any) -> None:
            bar.length = max(progress.total, 1)
            finished = progress.done + progress.skipped + progress.failed
            bar.update(finished - bar.pos, f"{progress.done} done, {progress.skipped} skipped, "
                                            f"{progress.failed} failed")
            if also is not None:
                also(progress)

        importer = Importer(service, actor, target, found, ignore_errors,
                            report or report_path(service.store.log_path), shown)
        return importer.import_spec(spec) if spec is not None else importer.import_prefix(source)


def summarise(outcome: Any, target: str) -> None:
    p = outcome.progress
    click.echo(f"imported {p.done} into {target}, {p.skipped} skipped, {p.failed} failed")
    if outcome.duplicates:
        click.echo(f"{outcome.duplicates} URLs were in the spec more than once and were imported as separate "
                   "files (set skip_duplicate_urls to skip them)", err=True)
    if outcome.report is not None:
        click.echo(f"errors: {outcome.report}", err=True)
        for failure in outcome.failures[:5]:
            click.echo(f"  {failure.where}: {failure.error}", err=True)
    if outcome.stopped:
        click.echo(f"stopped: {outcome.stopped}; what was imported stays: run the import again (with "
                   "skip_duplicate_urls) to complete it", err=True)
    if outcome.interrupted:
        click.echo("interrupted: what was imported stays; run the import again with skip_duplicate_urls "
                   "to complete it", err=True)
        sys.exit(130)
    if p.failed:
        sys.exit(1)


@click.command("sync")
@click.argument("folder_path", metavar="FOLDER")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@store_option
def sync_command(folder_path: str, as_json: bool, store_dir: Path | None) -> None:
    """Sync a cloud-synced folder with its bucket prefix now."""
    from encfs.cloud.sync import sync_folder

    with service_for(store_dir) as service:
        target = files_path(service, folder_path)
        with recorded(service, "sync", target):
            outcome = sync_folder(admitted(service, Actor.local(), "sync", target), Actor.local(), target)
    if as_json:
        click.echo(json.dumps(vars(outcome), indent=2))
    else:
        click.echo(f"synced {outcome.folder}: {outcome.added} added, {outcome.updated} updated, "
                   f"{outcome.tombstoned} tombstoned, {outcome.restored} restored, "
                   f"{outcome.unchanged} unchanged, {len(outcome.failures)} failed")
        for url, reason in outcome.failures[:20]:
            click.echo(f"  {url}: {reason}", err=True)
    if outcome.failures:
        sys.exit(1)


def create_cloud_synced(service: Any, actor: Actor, target: str, url: str, integration_name: str | None,
                        description: str, metadata: dict[str, Any] | None) -> Any:
    """`encfs folder create PATH --cloud-sync URL --integration NAME`."""
    from encfs.cloud.sync import create_synced_folder

    if not integration_name:
        fail(EncfsError("--cloud-sync needs --integration NAME", target))
    with recorded(service, "mkdir", target):
        return create_synced_folder(service, actor, target, url, integration_name, description, metadata)


def print_tombstones(service: Any, actor: Actor, target: str, long_format: bool) -> None:
    """`encfs ls --tombstones FOLDER`: files whose object is gone from the bucket."""
    from encfs.cli import describe_line

    for name, item in service.cloud.tombstones(actor, target):
        ref = service.cloud.reference(item.id) or {}
        line = describe_line(item, name) if long_format else name
        click.echo(f"{line}  (tombstone: {ref.get('url', '?')} is gone)")
