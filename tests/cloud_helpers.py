"""Shared by the cloud tests: a store with an integration to the test's bucket, the CLI
in-process, and the AWS chain pointed at the suite's SeaweedFS."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from encfs.cli import main

from seaweed import SeaweedS3


def cli(*args: str | os.PathLike[str], store: Path) -> Result:
    return CliRunner().invoke(main, [*(str(a) for a in args), "--store", str(store)])


def explain(result: Result) -> str:
    return (f"exit {result.exit_code}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}\n"
            f"{result.exception!r}")


@dataclass
class Cloud:
    store: Path
    bucket: str
    s3: Any
    server: SeaweedS3

    def run(self, *args: str | os.PathLike[str]) -> Result:
        return cli(*args, store=self.store)

    def ok(self, *args: str | os.PathLike[str]) -> Result:
        result = self.run(*args)
        assert result.exit_code == 0, explain(result)
        return result

    def put(self, key: str, data: bytes) -> str:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        return f"s3://{self.bucket}/{key}"

    def spec(self, tmp: Path, document: Any, name: str = "spec.json") -> Path:
        path = tmp / name
        path.write_text(json.dumps(document) if not isinstance(document, str) else document)
        return path

    def names(self, folder: str) -> list[str]:
        result = self.ok("ls", folder)
        return [line for line in result.stdout.splitlines() if line]


def aws_env(monkeypatch: pytest.MonkeyPatch, server: SeaweedS3,
            identity: tuple[str, str] | None = None) -> None:
    for name, value in (server.env(identity) if identity else server.env()).items():
        monkeypatch.setenv(name, value)


def make_cloud(seaweed: SeaweedS3, bucket: str, store: Path, monkeypatch: pytest.MonkeyPatch) -> Cloud:
    """A store with integration `data` to the bucket and a folder /Imported."""
    aws_env(monkeypatch, seaweed)
    made = Cloud(store, bucket, seaweed.client(), seaweed)
    made.ok("integration", "add", "data", f"s3://{bucket}")
    made.ok("folder", "create", "/Imported")
    return made
