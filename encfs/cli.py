"""The `encfs` command line: click commands over the same service the mount uses."""

from __future__ import annotations

import errno
import faulthandler
import json
import logging
import os
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import click

from encfs import remote
from encfs.cli_blobs import bucket_blobs, bucket_options
from encfs.errors import AlreadyExists, DamagedMetadata, EncfsError, InvalidInput, NotFound, StoreError
from encfs.logs import setup_logging
from encfs.meta.check import damage_in
from encfs.meta.room import DEFAULT_MAX_METADATA, parse_size
from encfs.metadata import parse_client_metadata
from encfs.model import Actor, Folder, Item, Kind, Special
from encfs.names import printable
from encfs.special import TYPE_NAMES
from encfs.store import init_store, locate, open_store

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("encfs")
MOUNT_WAIT_SECONDS = 15.0


def store_option(command: F) -> F:
    return click.option(
        "--store", "store_dir", type=click.Path(path_type=Path, readable=False), default=None,
        help="Store directory (default: $ENCFS_STORE, else the user data directory).",
    )(command)


@contextmanager
def service_for(store_dir: Path | None) -> Iterator[Any]:
    """Open the store and the service; turn domain errors into a message and exit code,
    and damaged metadata met on the way into the sentence that says so."""
    from encfs.recovery import clear_abandoned_drafts
    from encfs.service import FilesService

    path = locate(None if remote.caller() else store_dir)  # run for a user by a mount: its store
    try:
        store = open_store(path)
    except DamagedMetadata as exc:
        log_damage(path, exc)
        fail(exc)
    except EncfsError as exc:
        fail(exc)
    setup_logging(store.log_path, to_stderr=False)
    log_fatal_signals(store.log_path)
    clear_abandoned_drafts(store.blobs)  # a CLI upload killed with kill -9 leaves its draft
    service = remote.gated(FilesService(store))
    try:
        yield service
        service.settle_series()
    except Exception as exc:
        damage = damage_in(exc)
        if damage is not None:
            log.error("%s", damage)
            fail(damage)
        if isinstance(exc, EncfsError):
            fail(exc)
        raise
    finally:
        store.close()


def log_damage(store_path: Path, damage: DamagedMetadata) -> None:
    """Damage found before the store opened still goes to the store's log."""
    if (store_path / "log").is_dir():
        setup_logging(store_path / "log" / "encfs.log", to_stderr=False)
        log.error("store %s: %s", store_path, damage)


_fault_log: dict[Path, IO[str]] = {}


def log_fatal_signals(log_path: Path) -> None:
    """A fatal signal (SIGBUS from a data.mdb cut short while mapped, which no check
    before mapping can see) leaves the Python stacks in the store's log, not nothing.
    The file stays open while faulthandler writes to it: one at a time, the latest store's."""
    if log_path in _fault_log:
        return
    try:
        fault_log = open(log_path, "a")  # noqa: SIM115
    except OSError:
        return
    faulthandler.enable(file=fault_log, all_threads=True)
    for earlier in _fault_log.values():
        earlier.close()
    _fault_log.clear()
    _fault_log[log_path] = fault_log


def fail(exc: EncfsError) -> NoReturn:
    click.echo(f"encfs: {printable(str(exc))}", err=True)
    sys.exit(exc.exit_code)


def confirm(question: str) -> None:
    """Ask; anything but yes leaves everything as it was (exit 1)."""
    try:
        agreed = click.confirm(f"encfs: {question}", default=False, err=True)
    except click.Abort:  # no answer (end of input)
        agreed = False
    if not agreed:
        click.echo("encfs: nothing changed (pass --yes to do it without asking)", err=True)
        sys.exit(1)


def files_path(service: Any, argument: str) -> str:
    """A Files path, or a local path inside a mount of this store (existing or about
    to be created), as a Files path."""
    if not argument:
        fail(NotFound("an empty path names no file or folder"))
    absolute = Path(os.path.abspath(argument))
    existing = absolute
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if existing != existing.parent:
        mount = existing
        while not os.path.ismount(mount) and mount != mount.parent:
            mount = mount.parent
        if mount != mount.parent and _store_id_at(mount) == service.store.store_id:
            relative = str(absolute.relative_to(mount))
            return "/" if relative == "." else "/" + relative
    return "/" + argument.strip("/")


def _store_id_at(mount: Path) -> str | None:
    try:
        return (mount / ".encfs" / "store-id").read_text().strip()
    except OSError:
        return None


class EncfsGroup(click.Group):
    """The top command: whatever a command lets escape becomes one line on stderr and
    a non-zero exit, never a Python traceback."""

    def main(self, args: Any = None, *rest: Any, **extra: Any) -> Any:
        """A non-root user's command on a store only root may open goes to a mount of it."""
        remote.forward_if_needed(list(sys.argv[1:] if args is None else args))
        remote.act_for_caller()
        return super().main(args, *rest, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except EncfsError as exc:
            fail(exc)
        except BrokenPipeError:  # the reader of our output went away (`encfs ls | head`)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except OSError as exc:
            where = f"{printable(os.fsdecode(exc.filename))}: " if exc.filename else ""
            click.echo(f"encfs: {where}{exc.strerror or exc}", err=True)
            sys.exit(1)
        except Exception as exc:
            damage = damage_in(exc)  # met outside service_for: a mount's start-up recovery, say
            if damage is not None:
                log.error("%s", damage)
                fail(damage)
            internal_error(exc)


def internal_error(exc: Exception) -> NoReturn:
    """A fault of encfs itself: the traceback goes to the store's log if a command
    opened one, the user gets one line."""
    log_files = [h.baseFilename for h in log.handlers if isinstance(h, logging.FileHandler)]
    log.error("internal error", exc_info=exc)
    where = f"details in the log {log_files[0]}" if log_files else "no store log was open for the details"
    click.echo(f"encfs: internal error: {printable(f'{type(exc).__name__}: {exc}')} ({where})", err=True)
    sys.exit(1)


@click.group(cls=EncfsGroup)
@click.version_option(package_name="encfs")
def main() -> None:
    """encfs: Encord Files as a drive. Folders of images, videos and DICOM, search and
    details, from a FUSE mount or from these commands."""


@main.command()
@store_option
@click.option("--max-metadata", "max_metadata", default=None, metavar="SIZE",
              help="How big the metadata may grow, e.g. 4GiB (default 64GiB); deletes always work.")
@bucket_options
def init(store_dir: Path | None, max_metadata: str | None, **bucket: Any) -> None:
    """Create a new, empty store (private to you: other users cannot read it). With
    --blobs, file bytes go to a bucket (credentials: the standard AWS chain)."""
    path = locate(store_dir)
    try:
        limit = DEFAULT_MAX_METADATA if max_metadata is None else parse_size(max_metadata)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-metadata") from None
    try:
        init_store(path, limit, bucket_blobs(**bucket))
    except EncfsError as exc:
        fail(exc)
    except OSError as exc:
        fail(StoreError(cannot_create(path, exc)))
    click.echo(f"created store {path}")


@main.command()
@click.argument("mountpoint", type=click.Path(path_type=Path))
@store_option
@click.option("--foreground", is_flag=True, help="Stay attached and log to stderr.")
@click.option("--debug", is_flag=True, help="Print every FUSE call (with --foreground).")
@click.option("--daemon", is_flag=True, hidden=True, help="Started by a background mount.")
@click.option("--multi-user/--single-user", "multi_user", default=None,
              help="Serve every Linux user of the machine, modes checked per caller (default when run "
                   "as root), or only yourself.")
@click.option("--as", "serve_as", default=None, metavar="EMAIL",
              help="Serve one user of the organisation, to that user's Linux user only (with full caching).")
@click.option("--sync-every", "--every", "sync_every", default=None, metavar="DURATION",
              help="Sync every cloud-synced folder this often (30s, 10m, 24h).")
def mount(mountpoint: Path, store_dir: Path | None, foreground: bool, debug: bool, daemon: bool,
          multi_user: bool | None, serve_as: str | None, sync_every: str | None) -> None:
    """Mount the store at MOUNTPOINT (an empty directory)."""
    from encfs.cloud.sync import SYNC_EVERY_VARIABLE, parse_duration
    from encfs.fs.mount import check_mountpoint, check_multi_user

    if sync_every is not None:  # the daemon, started with this environment, reads it
        try:
            os.environ[SYNC_EVERY_VARIABLE] = str(parse_duration(sync_every))
        except EncfsError as exc:
            fail(exc)
    store_path = locate(store_dir)
    mountpoint = mountpoint.absolute()
    if serve_as is not None and multi_user:
        fail(StoreError("--as serves one user: it cannot be a --multi-user mount"))
    multi_user = os.geteuid() == 0 and serve_as is None if multi_user is None else multi_user
    try:
        check_multi_user(multi_user)
        open_store(store_path).close()
        check_mountpoint(mountpoint)
        if foreground or daemon:
            setup_logging(store_path / "log" / "encfs.log", to_stderr=not daemon)
            log_fatal_signals(store_path / "log" / "encfs.log")
            if daemon:
                silence_stderr_once_mounted(mountpoint)
            serve_logged(store_path, mountpoint, debug, multi_user, serve_as)
            return
    except DamagedMetadata as exc:
        log_damage(store_path, exc)
        fail(exc)
    except EncfsError as exc:
        fail(exc)
    start_background_mount(store_path, mountpoint, multi_user, serve_as)


def cannot_create(path: Path, exc: OSError) -> str:
    """Why a store cannot be made at `path`, in the words of the path given."""
    if os.path.isfile(path):
        return f"{path} is a file; give a new or empty directory for the store"
    culprit = os.fsdecode(exc.filename) if exc.filename else str(path)
    if exc.errno == errno.ENOTDIR:
        return f"cannot create a store at {path}: a part of {culprit} is a file, not a directory"
    return f"cannot create a store at {path}: {exc.strerror} ({culprit})"


def serve_logged(store_path: Path, mountpoint: Path, debug: bool, multi_user: bool,
                 serve_as: str | None = None) -> None:
    """Serve the mount; a refusal at start-up (no libfuse3, say) goes to the store's log
    too, which is where one looks when a background mount did not come up."""
    from encfs.fs.mount import serve

    try:
        serve(store_path, mountpoint, debug=debug, multi_user=multi_user, serve_as=serve_as)
    except EncfsError as exc:
        logging.getLogger("encfs").error("could not mount at %s: %s", mountpoint, exc)
        raise


def start_background_mount(store_path: Path, mountpoint: Path, multi_user: bool,
                           serve_as: str | None = None) -> None:
    """Start the mount's daemon detached and return once the mount answers. Until then
    the daemon's stderr is a temporary file, read back to say why a mount did not come
    up; once it is up the daemon points its stderr at /dev/null (the log has it all)."""
    with tempfile.TemporaryFile() as startup_log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "encfs", "mount", "--daemon", "--store", str(store_path),
             "--multi-user" if multi_user else "--single-user", str(mountpoint),
             *(["--as", serve_as] if serve_as else [])],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=startup_log,
            start_new_session=True,
        )
        deadline = time.monotonic() + MOUNT_WAIT_SECONDS
        while time.monotonic() < deadline:
            if os.path.ismount(mountpoint):
                wait_for_silenced_stderr(daemon.pid)
                click.echo(f"mounted {store_path} at {mountpoint} (pid {daemon.pid})")
                return
            if daemon.poll() is not None:
                break
            time.sleep(0.05)
        startup_log.seek(0)
        detail = startup_log.read().decode(errors="replace").strip().splitlines()
    if daemon.poll() is None:
        daemon.terminate()
    reason = detail[-1].removeprefix("encfs: ") if detail else "the mount did not come up"
    fail(StoreError(f"could not mount at {mountpoint}: {reason}"))


def silence_stderr_once_mounted(mountpoint: Path) -> None:
    """In a background daemon: once the mount answers, point stderr at /dev/null, so
    that nothing is written twice (the log has every line) or to a deleted file."""

    def watch() -> None:
        deadline = time.monotonic() + 2 * MOUNT_WAIT_SECONDS
        while time.monotonic() < deadline:
            if os.path.ismount(mountpoint):
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, sys.stderr.fileno())
                os.close(null)
                return
            time.sleep(0.02)

    threading.Thread(target=watch, name="stderr-once-mounted", daemon=True).start()


def wait_for_silenced_stderr(pid: int) -> None:
    """Return once the daemon's stderr is /dev/null (a moment after the mount answers)."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{pid}/fd/2") == os.devnull:
                return
        except OSError:
            return
        time.sleep(0.01)


@main.command()
@click.argument("mountpoint")  # a plain string: click.Path would stat it, which blocks on a hung mount
def umount(mountpoint: str) -> None:
    """Unmount a mounted store (also one whose daemon hangs or died)."""
    from encfs.fs.unmount import UnmountError, unmount

    try:
        forced = unmount(Path(mountpoint))
    except UnmountError as exc:
        fail(exc)
    if forced:
        click.echo(f"encfs: the daemon of {mountpoint} did not answer (hung, stuck inside libfuse or gone): "
                   "its FUSE connection was aborted", err=True)
    click.echo(f"unmounted {mountpoint}")


# ---------------------------------------------------------------- folders


@main.group()
def folder() -> None:
    """Create, list, remove and move folders."""


@folder.command("create")
@click.argument("path")
@click.option("--description", default="", help="What the folder holds.")
@click.option("--metadata", default=None, help="Client metadata, a JSON object.")
@click.option("--parents", "-p", is_flag=True, help="Create missing parent folders too.")
@click.option("--cloud-sync", default=None, metavar="s3://BUCKET/PREFIX",
              help="Mirror this bucket prefix (fixed at creation; encfs sync FOLDER syncs it).")
@click.option("--integration", "integration_name", default=None, help="The integration of --cloud-sync.")
@store_option
def folder_create(path: str, description: str, metadata: str | None, parents: bool, cloud_sync: str | None,
                  integration_name: str | None, store_dir: Path | None) -> None:
    """Create a folder."""
    from encfs.cli_cloud import create_cloud_synced

    with service_for(store_dir) as service:
        actor = Actor.local()
        target = files_path(service, path)
        client_metadata = parse_metadata(metadata)
        if parents:
            create_parents(service, actor, target)
        created = (create_cloud_synced(service, actor, target, cloud_sync, integration_name, description,
                                       client_metadata) if cloud_sync
                   else service.create_folder(actor, target, 0o755, description, client_metadata))
        click.echo(f"created folder {service.path_of(actor, created.id)}")


def parse_metadata(text: str | None) -> dict[str, Any] | None:
    """--metadata: the same JSON object, with the same limits, as the mount takes."""
    if text is None:
        return None
    try:
        return parse_client_metadata(text.encode("utf-8", "surrogateescape"))
    except InvalidInput as exc:
        raise click.BadParameter(printable(exc.reason), param_hint="--metadata") from None


def create_parents(service: Any, actor: Actor, path: str) -> None:
    parts = [p for p in path.split("/") if p][:-1]
    for depth in range(1, len(parts) + 1):
        partial = "/" + "/".join(parts[:depth])
        try:
            service.lookup(actor, partial)
        except NotFound:
            service.create_folder(actor, partial)


@folder.command("list")
@click.argument("path", default="/")
@store_option
def folder_list(path: str, store_dir: Path | None) -> None:
    """List the folders in a folder (the root by default)."""
    with service_for(store_dir) as service:
        for node in service.list_folder(Actor.local(), files_path(service, path)):
            if isinstance(node, Folder):
                suffix = f"  {node.description}" if node.description else ""
                click.echo(f"{node.name}/{suffix}")


@folder.command("rm")
@click.argument("path")
@click.option("--recursive", "-r", is_flag=True, help="Remove everything in it too.")
@store_option
def folder_rm(path: str, recursive: bool, store_dir: Path | None) -> None:
    """Remove a folder (it must be empty unless --recursive)."""
    with service_for(store_dir) as service:
        target = files_path(service, path)
        node = service.lookup(Actor.local(), target)
        if not isinstance(node, Folder):
            fail(EncfsError("not a folder; remove files with `encfs rm`", target))
        removed = service.remove_folder(Actor.local(), target, recursive=recursive)
        click.echo(f"removed folder {target}" + (f" and {removed} files" if removed else ""))


@folder.command("mv")
@click.argument("source")
@click.argument("target")
@click.option("--yes", "-y", is_flag=True, help="Do not ask when files would leave a synced Dataset.")
@store_option
def folder_mv(source: str, target: str, yes: bool, store_dir: Path | None) -> None:
    """Move or rename a folder."""
    with service_for(store_dir) as service:
        src = files_path(service, source)
        if not isinstance(service.lookup(Actor.local(), src), Folder):
            fail(EncfsError("not a folder; move files with `encfs mv`", src))
        move_into(service, src, files_path(service, target), yes)


def move_into(service: Any, source: str, target: str, yes: bool) -> None:
    """Like mv: a target that is an existing folder receives the source inside it.
    Moving files out of a synced folder asks first (they leave its Dataset)."""
    actor = Actor.local()
    try:
        existing = service.lookup(actor, target)
    except NotFound:
        existing = None
    if isinstance(existing, Folder):
        target = target.rstrip("/") + "/" + source.rstrip("/").rsplit("/", 1)[-1]
    left = service.datasets_left_by_move(actor, source, target.rsplit("/", 1)[0] or "/")
    if left and not yes:
        confirm(f"{source} is in the synced folder of Dataset {', '.join(left)}; moving it out removes it "
                "from that Dataset (and its Projects). Move?")
    moved = service.move(actor, source, target)
    click.echo(f"moved {source} -> {service.path_of(actor, moved.id)}")


@folder.command("info")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@store_option
def folder_info(path: str, as_json: bool, store_dir: Path | None) -> None:
    """Files per kind and total size in a folder, subfolders included."""
    with service_for(store_dir) as service:
        summary = service.folder_summary(Actor.local(), files_path(service, path))
        if as_json:
            click.echo(json.dumps(summary, indent=2))
            return
        click.echo(f"{summary['path']}: {summary['files']} files, {summary['folders']} folders, "
                   f"{human_size(summary['size'])}")
        if summary["description"]:
            click.echo(f"description: {summary['description']}")
        if "cloud_sync" in summary:
            sync = summary["cloud_sync"]
            click.echo(f"cloud-synced with {sync['url']} (integration {sync['integration']})")
        if summary["files_in_bucket"]:
            click.echo(f"in a bucket: {summary['files_in_bucket']} of the files (the rest in the store)")
        if summary["tombstones"]:
            click.echo(f"tombstones: {summary['tombstones']} (files whose object is gone from the bucket)")
        if summary["synced_datasets"]:
            click.echo(f"synced with Dataset: {', '.join(summary['synced_datasets'])}")
        for kind, count in summary["kinds"].items():
            click.echo(f"  {kind:<15} {count}")


# ---------------------------------------------------------------- batches


@main.group()
def batch() -> None:
    """Batch images into an image group or sequence; DICOM files into a series."""


def _batch(kind: Kind, folder_path: str, name: str | None, images: tuple[Path, ...],
           from_folder: str | None, store_dir: Path | None) -> None:
    with service_for(store_dir) as service:
        actor = Actor.local()
        if from_folder and images:
            raise click.UsageError("give local IMAGES or --from-folder, not both")
        if from_folder:
            result = service.batch_folder(actor, files_path(service, from_folder), kind, name)
        elif images:
            if not name:
                raise click.UsageError("--name is needed with local images")
            require_local_files(images)
            with click.progressbar(length=len(images), label=f"uploading {len(images)} images",
                                   file=sys.stderr) as bar:
                bar.update(0)
                result = service.batch_local_images(actor, files_path(service, folder_path), name, kind,
                                                    list(images))
                bar.update(len(images))
        else:
            raise click.UsageError("give local IMAGES or --from-folder FOLDER/SUB")
        if result.note:
            click.echo(f"note: {result.note}")
        for path, item in zip(result.paths, result.items, strict=True):
            click.echo(f"created {path} ({item.media.kind.value}, {item.media.frames} frames)")


@batch.command("image-group")
@click.argument("folder_path", metavar="FOLDER", required=False, default="/")
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--name", default=None, help="NAME.imagegroup and the folder NAME/ of its frames.")
@click.option("--from-folder", default=None, help="Batch the images already in this folder.")
@store_option
def batch_image_group(folder_path: str, images: tuple[Path, ...], name: str | None, from_folder: str | None,
                      store_dir: Path | None) -> None:
    """Make NAME.imagegroup in FOLDER from local IMAGES (or --from-folder FOLDER/SUB)."""
    _batch(Kind.IMAGE_GROUP, folder_path, name, images, from_folder, store_dir)


@batch.command("image-sequence")
@click.argument("folder_path", metavar="FOLDER", required=False, default="/")
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--name", default=None, help="NAME.imagesequence.mp4 and the folder NAME/ of its frames.")
@click.option("--from-folder", default=None, help="Batch the images already in this folder.")
@store_option
def batch_image_sequence(folder_path: str, images: tuple[Path, ...], name: str | None,
                         from_folder: str | None, store_dir: Path | None) -> None:
    """Encode local IMAGES (or --from-folder FOLDER/SUB) into NAME.imagesequence.mp4, in name order;
    images of several sizes make one sequence per size."""
    _batch(Kind.IMAGE_SEQUENCE, folder_path, name, images, from_folder, store_dir)


@batch.command("dicom-series")
@click.argument("folder_path", metavar="FOLDER")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@store_option
def batch_dicom_series(folder_path: str, files: tuple[Path, ...], store_dir: Path | None) -> None:
    """Upload DICOM FILES into FOLDER; the files of one series form NAME.dcmseries. A refused
    file (missing required tags) stores nothing."""
    with service_for(store_dir) as service:
        actor = Actor.local()
        target = files_path(service, folder_path)
        require_local_files(files)
        uploaded = upload_all(service, actor, target, files, replace=False,
                              total=sum(f.stat().st_size for f in files))
        series = sorted({p for path in uploaded for p in service.info(actor, path).get("groups", [])})
        for path in series:
            details = service.info(actor, path)
            click.echo(f"series {path}: {details.get('frames')} slices, "
                       f"3D: {'yes' if details.get('dicom', {}).get('render_3d') == 'true' else 'no'}")


# ---------------------------------------------------------------- files


@main.command()
@click.argument("folder_path", metavar="FOLDER")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--replace", is_flag=True, help="Give existing files of the same name new content.")
@store_option
def upload(folder_path: str, files: tuple[Path, ...], replace: bool, store_dir: Path | None) -> None:
    """Upload local FILES into FOLDER, with a progress bar. A refusal stores nothing."""
    with service_for(store_dir) as service:
        actor = Actor.local()
        target = files_path(service, folder_path)
        if not isinstance(service.lookup(actor, target), Folder):
            fail(EncfsError("not a folder", target))
        files = remote.caller_files(files)  # a user's upload through a mount: the files they passed
        require_local_files(files)
        if not replace:
            taken = [f"{target}/{f.name}" for f in files if exists(service, actor, f"{target}/{f.name}")]
            if taken:
                refusal = AlreadyExists("a file or folder with this name exists (use --replace to give "
                                        "it new content); nothing was uploaded", ", ".join(taken))
                service.record_refusal(actor, "upload", refusal)
                fail(refusal)
        total = sum(f.stat().st_size for f in files)
        uploaded = upload_all(service, actor, target, files, replace, total)
        click.echo(f"uploaded {len(uploaded)} files ({human_size(total)}) to {target}")


def upload_all(service: Any, actor: Actor, target: str, files: tuple[Path, ...], replace: bool,
               total: int) -> list[str]:
    """Upload every file; if one fails, the new items made so far are removed again."""
    created: list[str] = []
    with click.progressbar(length=total, label=f"uploading {len(files)} files",
                           file=sys.stderr, show_pos=False) as bar:
        for local in files:
            path = f"{target}/{local.name}"
            is_new = not exists(service, actor, path)
            try:
                service.upload(actor, target, local, replace=replace)
            except EncfsError:
                for done in created:
                    service.remove_item(actor, done)
                raise
            if is_new:
                created.append(path)
            bar.update(local.stat().st_size)
    return created


def exists(service: Any, actor: Actor, path: str) -> bool:
    try:
        service.lookup(actor, path)
    except NotFound:
        return False
    return True


def require_local_files(files: tuple[Path, ...]) -> None:
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        fail(NotFound("not local files: " + ", ".join(missing)))


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


@main.command("ls")
@click.argument("path", default="/")
@click.option("--long", "-l", "long_format", is_flag=True, help="Kind, size and modification time.")
@click.option("--tombstones", is_flag=True, help="Files of a cloud-synced folder whose object is gone.")
@store_option
def ls(path: str, long_format: bool, tombstones: bool, store_dir: Path | None) -> None:
    """List a folder."""
    from encfs.cli_cloud import print_tombstones

    with service_for(store_dir) as service:
        actor = Actor.local()
        target = files_path(service, path)
        if tombstones:
            print_tombstones(service, actor, target, long_format)
            return
        node = service.lookup(actor, target)
        entries = service.list_entries(actor, target) if node.is_folder else [(node.name, node)]
        for name, child in entries:
            click.echo(describe_line(child, name) if long_format else name + ("/" if child.is_folder else ""))


def describe_line(node: Folder | Item, name: str) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(node.mtime_ns / 1e9))
    if isinstance(node, Folder):
        return f"{'folder':<14} {'-':>10}  {when}  {name}/"
    if isinstance(node, Special):
        shown = f"{name} -> {node.target}" if node.target else name
        return f"{TYPE_NAMES[stat.S_IFMT(node.mode)]:<14} {node.size:>10}  {when}  {shown}"
    return f"{node.media.kind.value:<14} {node.size:>10}  {when}  {name}"


@main.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@store_option
def info(path: str, as_json: bool, store_dir: Path | None) -> None:
    """Show the details of a file or folder."""
    with service_for(store_dir) as service:
        details = service.info(Actor.local(), files_path(service, path))
        if as_json:
            click.echo(json.dumps(details, indent=2, sort_keys=True))
            return
        for key, value in details.items():
            if isinstance(value, dict):
                value = json.dumps(value, sort_keys=True) if value else "-"
            elif isinstance(value, list):
                value = ", ".join(str(v) for v in value) or "-"
            click.echo(f"{key + ':':<17} {value}")


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--recursive", "-r", is_flag=True, help="Remove folders and what they hold.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask when the files are in Datasets.")
@store_option
def rm(paths: tuple[str, ...], recursive: bool, yes: bool, store_dir: Path | None) -> None:
    """Remove files (and folders with -r). Removed files leave every Dataset."""
    with service_for(store_dir) as service:
        actor = Actor.local()
        targets = [files_path(service, path) for path in paths]
        nodes = [service.lookup(actor, target) for target in targets]  # all exist, or nothing is removed
        for target, node in zip(targets, nodes, strict=True):
            if isinstance(node, Folder) and not recursive:
                fail(EncfsError("is a folder; use -r to remove it and what it holds", target))
        datasets = sorted({name for target in targets for name in service.datasets_under(actor, target)})
        if datasets and not yes:
            confirm(f"the files are in Datasets {', '.join(datasets)}; deleting removes them from those "
                    "Datasets too. Delete?")
        for target, node in zip(targets, nodes, strict=True):
            if isinstance(node, Folder):
                service.remove_folder(actor, target, recursive=True)
            else:
                service.remove_item(actor, target)
            click.echo(f"removed {target}")


@main.command()
@click.argument("source")
@click.argument("target")
@click.option("--yes", "-y", is_flag=True, help="Do not ask when files would leave a synced Dataset.")
@store_option
def mv(source: str, target: str, yes: bool, store_dir: Path | None) -> None:
    """Move or rename a file or folder (into TARGET if it is a folder)."""
    with service_for(store_dir) as service:
        move_into(service, files_path(service, source), files_path(service, target), yes)


@main.command()
@store_option
def errors(store_dir: Path | None) -> None:
    """Show your latest refusals (what /.encfs/errors shows on the mount)."""
    with service_for(store_dir) as service:
        for line in service.refusals(Actor.local()):
            click.echo(line)


@main.command()
@click.option("--repair", is_flag=True,
              help="Fix what can be fixed; move damaged and unnamed blob files to STORE/quarantine/.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@store_option
def fsck(repair: bool, as_json: bool, store_dir: Path | None) -> None:
    """Check the store: metadata invariants, and every blob's content read in full.
    Exits 1 if problems remain (after --repair: those it could not fix)."""
    from encfs.fsck import content_size
    from encfs.fsck import fsck as check_store

    with service_for(store_dir) as service:
        bar = click.progressbar(length=content_size(service.store), label="checking content",
                                file=sys.stderr, show_pos=False)
        with bar:
            report = check_store(service.store, repair, bar.update)
    click.echo(report.as_json() if as_json else report.text())
    if report.remaining:
        sys.exit(1)


logging.getLogger("encfs").addHandler(logging.NullHandler())


def _register_collections() -> None:
    from encfs.cli_blobs import gc
    from encfs.cli_datasets import dataset, project

    main.add_command(gc)
    main.add_command(dataset)
    main.add_command(project)
    from encfs.cli_access import access, group, user

    for command in (user, group, access):
        main.add_command(command)
    from encfs.cli_activity import activity
    main.add_command(activity)
    from encfs.cli_search import metadata_schema, search
    main.add_command(search)
    main.add_command(metadata_schema)


_register_collections()
from encfs.cli_cloud import import_command, integration, sync_command  # noqa: E402  (uses this module)

for _command in (integration, import_command, sync_command):
    main.add_command(_command)
