"""The suite's S3 server is real: it stores, serves ranges, and refuses what it should."""

from __future__ import annotations

import botocore.exceptions
import pytest

from seaweed import READER, SeaweedS3


def test_objects_round_trip_with_ranges(seaweed: SeaweedS3, bucket: str) -> None:
    client = seaweed.client()
    client.put_object(Bucket=bucket, Key="a/b.bin", Body=b"0123456789")
    assert client.get_object(Bucket=bucket, Key="a/b.bin", Range="bytes=2-4")["Body"].read() == b"234"


def test_reader_identity_cannot_write(seaweed: SeaweedS3, bucket: str) -> None:
    with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
        seaweed.client(READER).put_object(Bucket=bucket, Key="x", Body=b"1")


def test_unknown_credentials_are_refused(seaweed: SeaweedS3, bucket: str) -> None:
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidAccessKeyId"):
        seaweed.client(("nobody", "nothing")).list_objects_v2(Bucket=bucket)
