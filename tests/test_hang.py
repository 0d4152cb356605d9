"""A mount never hangs: bounded-time stress of concurrent renames, replaces and lookups
on two mounts of one store.

Each scenario runs its workers as subprocesses for a few seconds. A worker that has not
finished within HANG_BOUND is a hang: the test then aborts the mounts' FUSE
connections (so that the workers, the daemons and the suite are freed) and fails."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import Mounted

STRESS_SECONDS = 4.0
HANG_BOUND = 60.0
FUSECTL = Path("/sys/fs/fuse/connections")


def connection_of(mountpoint: Path) -> str | None:
    """The FUSE connection number of a mount, read from mountinfo (a stat would hang)."""
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[4] == str(mountpoint):
                return fields[2].split(":")[1]
    return None


def abort(mounts: list[Mounted]) -> None:
    if not (FUSECTL / "").exists() or not any(FUSECTL.iterdir()):
        subprocess.run(["mount", "-t", "fusectl", "none", str(FUSECTL)], capture_output=True)
    for mounted in mounts:
        number = connection_of(mounted.path)
        if number is not None:
            (FUSECTL / number / "abort").write_text("1")
            subprocess.run(["fusermount3", "-uz", str(mounted.path)], capture_output=True)


def run_workers(mounts: list[Mounted], workers: list[str]) -> list[str]:
    """Run each worker (Python source, given SECONDS) in its own process; return their
    outputs. A worker still running after HANG_BOUND fails the test, after the mounts'
    connections are aborted so that nothing stays blocked."""
    sources = [textwrap.dedent(code).replace("SECONDS", repr(STRESS_SECONDS)) for code in workers]
    processes = [
        subprocess.Popen([sys.executable, "-c", source], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
        for source in sources
    ]
    outputs, hung = [], []
    try:
        for index, process in enumerate(processes):
            try:
                outputs.append(process.communicate(timeout=HANG_BOUND)[0])
            except subprocess.TimeoutExpired:
                hung.append(index)
                break
    finally:
        if hung:
            abort(mounts)
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.communicate()
    assert not hung, f"worker {hung[0]} did not finish within {HANG_BOUND:.0f} s: the mount hung"
    return outputs


@pytest.fixture
def two_mounts(store: Path, mount_factory) -> list[Mounted]:
    return [mount_factory(store, "m1"), mount_factory(store, "m2")]


def test_rename_of_a_folder_onto_itself_while_another_mount_replaces_it(two_mounts: list[Mounted]) -> None:
    m1, m2 = two_mounts
    (m1 / "A" / "s").mkdir(parents=True)
    outputs = run_workers(two_mounts, [
        f"""
        import os, time
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            try:
                os.rename('{m1 / "A/s"}', '{m1 / "A/s"}')
            except FileNotFoundError:
                pass
        print('done')
        """,
        f"""
        import os, time
        end, i = time.monotonic() + SECONDS, 0
        while time.monotonic() < end:
            os.rename('{m2 / "A/s"}', '{m2 / "A"}/o%d' % i)
            os.mkdir('{m2 / "A/s"}')
            os.rmdir('{m2 / "A"}/o%d' % i)
            i += 1
        print('done', i)
        """,
    ])
    assert all(output.startswith("done") for output in outputs), outputs
    assert sorted(os.listdir(m1 / "A")) == ["s"]


def test_rename_of_a_file_onto_itself_while_another_mount_replaces_it(two_mounts: list[Mounted]) -> None:
    m1, m2 = two_mounts
    (m1 / "A").mkdir()
    (m1 / "A" / "f").write_bytes(b"first")
    outputs = run_workers(two_mounts, [
        f"""
        import os, time
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            try:
                os.rename('{m1 / "A/f"}', '{m1 / "A/f"}')
                os.stat('{m1 / "A/f"}')
            except FileNotFoundError:
                pass
        print('done')
        """,
        f"""
        import os, time
        end, i = time.monotonic() + SECONDS, 0
        while time.monotonic() < end:
            os.rename('{m2 / "A/f"}', '{m2 / "A/old"}')
            with open('{m2 / "A/f"}', 'wb') as f:
                f.write(b'next %d' % i)
            os.unlink('{m2 / "A/old"}')
            i += 1
        print('done', i)
        """,
    ])
    assert all(output.startswith("done") for output in outputs), outputs
    assert (m2 / "A" / "f").read_bytes().startswith(b"next")


def test_rename_onto_its_own_folder_while_another_mount_replaces_it(two_mounts: list[Mounted]) -> None:
    """`mv A/s/t A/s` is always refused; through a name another mount keeps replacing,
    it must still be answered."""
    m1, m2 = two_mounts
    (m1 / "A" / "s" / "t").mkdir(parents=True)
    outputs = run_workers(two_mounts, [
        f"""
        import os, time
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            for old, new in (('A/s/t', 'A/s'), ('A/s', 'A/s/t/u'), ('A/s/t', 'A/s/t')):
                try:
                    os.rename('{m1.path}/' + old, '{m1.path}/' + new)
                except OSError:
                    pass
            try:
                os.listdir('{m1 / "A/s"}')
            except OSError:
                pass
        print('done')
        """,
        f"""
        import os, time
        end, i = time.monotonic() + SECONDS, 0
        while time.monotonic() < end:
            os.rename('{m2 / "A/s"}', '{m2 / "A"}/o%d' % i)
            os.makedirs('{m2 / "A/s/t"}')
            os.rmdir('{m2 / "A"}/o%d/t' % i)
            os.rmdir('{m2 / "A"}/o%d' % i)
            i += 1
        print('done', i)
        """,
    ])
    assert all(output.startswith("done") for output in outputs), outputs


def test_cross_mount_renames_race_lookups_and_removals(two_mounts: list[Mounted]) -> None:
    """Files moved between folders on one mount while the other lists, looks up,
    removes and recreates those folders; a third worker renames into a folder that is
    being removed."""
    m1, m2 = two_mounts
    for name in ("A", "B", "C"):
        (m1 / name).mkdir()
    for index in range(5):
        (m1 / "A" / f"x{index}").write_bytes(b"x")
    outputs = run_workers(two_mounts, [
        f"""
        import os, time
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            for index in range(5):
                for old, new in (('A', 'B'), ('B', 'A'), ('A', 'A')):
                    try:
                        os.rename('{m1.path}/%s/x%d' % (old, index), '{m1.path}/%s/x%d' % (new, index))
                    except OSError:
                        pass
        print('done')
        """,
        f"""
        import os, time
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            for name in ('A', 'B', 'C/d'):
                try:
                    for entry in os.listdir('{m2.path}/' + name):
                        os.stat('{m2.path}/%s/%s' % (name, entry))
                except OSError:
                    pass
            try:
                os.rmdir('{m2 / "C/d"}')
            except OSError:
                pass
            try:
                os.mkdir('{m2 / "C/d"}')
            except OSError:
                pass
        print('done')
        """,
        f"""
        import os, time
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            for old, new in (('A/x0', 'C/d/x0'), ('C/d/x0', 'A/x0'), ('C/d', 'C/d'), ('C/d', 'C/e'),
                             ('C/e', 'C/d')):
                try:
                    os.rename('{m1.path}/' + old, '{m1.path}/' + new)
                except OSError:
                    pass
        print('done')
        """,
    ])
    assert all(output.startswith("done") for output in outputs), outputs
