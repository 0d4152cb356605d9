"""Bad specs and faults during an import: a clear message naming the first error,
nothing imported (or, with --ignore-errors, the rest imported and the errors
reported), and a re-run that completes an import the server's absence stopped."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from cloud_helpers import Cloud, explain

from store_state import service_of


def refused(cloud: Cloud, spec: Path, *phrases: str) -> str:
    result = cloud.run("import", "/Imported", spec, "--integration", "data")
    assert result.exit_code != 0, explain(result)
    assert "Traceback" not in result.output
    for phrase in phrases:
        assert phrase in result.stderr, explain(result)
    assert cloud.names("/Imported") == []
    return result.stderr


def test_a_spec_that_is_not_json_or_has_unknown_keys_is_refused_whole(cloud: Cloud, tmp_path: Path) -> None:
    url = cloud.put("a.txt", b"text\n")
    refused(cloud, cloud.spec(tmp_path, "{not json"), "is not JSON")
    refused(cloud, cloud.spec(tmp_path, ["images"]), "must be a JSON object")
    refused(cloud, cloud.spec(tmp_path, {"text": [{"objectUrl": url}], "movies": []}), "unknown key 'movies'")
    refused(cloud, cloud.spec(tmp_path, {"text": [{"objectUrl": url, "colour": "red"}]}),
            "text[0]: unknown key 'colour'")
    refused(cloud, cloud.spec(tmp_path, {"text": [{"title": "x"}]}), "text[0]: objectUrl is missing")
    refused(cloud, cloud.spec(tmp_path, {"text": [{"objectUrl": url, "clientMetadata": [1]}]}),
            "text[0]: clientMetadata")
    refused(cloud, tmp_path / "missing.json", "no such spec file")
    assert "import /Imported: " in cloud.ok("errors").stdout  # recorded for the user, as on the mount
    good = cloud.spec(tmp_path, {"text": [{"objectUrl": url}]})
    unknown = cloud.run("import", "/Imported", good, "--integration", "nope")
    assert unknown.exit_code == 2 and "no integration named nope" in unknown.stderr, explain(unknown)
    nowhere = cloud.run("import", "/Missing", good, "--integration", "data")
    assert nowhere.exit_code == 2 and "/Missing" in nowhere.stderr, explain(nowhere)


def test_urls_outside_the_bucket_missing_objects_and_wrong_kinds_are_named(
        cloud: Cloud, tmp_path: Path) -> None:
    text = cloud.put("notes/a.txt", b"just text\n")
    refused(cloud, cloud.spec(tmp_path, {"text": [{"objectUrl": "s3://another-bucket/a.txt"}]}),
            "text[0]", "outside integration data")
    refused(cloud, cloud.spec(tmp_path, {"text": [{"objectUrl": f"s3://{cloud.bucket}/notes/gone.txt"}]}),
            "text[0]", "no such object")
    refused(cloud, cloud.spec(tmp_path, {"text": [{"objectUrl": text}], "images": [{"objectUrl": text}]}),
            "images[0]", "not an image (text by its bytes)")


def test_https_urls_outside_the_integration_or_not_of_s3_objects_are_refused(
        cloud: Cloud, tmp_path: Path) -> None:
    cloud.put("web/a.txt", b"text\n")
    endpoint = cloud.server.endpoint
    refused(cloud, cloud.spec(tmp_path, {"text": [{"objectUrl": f"{endpoint}/another-bucket/web/a.txt"}]}),
            "text[0]", "outside integration data")
    refused(cloud, cloud.spec(tmp_path, {"text": [
        {"objectUrl": "https://another-bucket.s3.eu-west-1.amazonaws.com/web/a.txt"}]}),
            "text[0]", "outside integration data")
    refused(cloud, cloud.spec(tmp_path, {"text": [{"objectUrl": f"https://example.com/{cloud.bucket}/web/a.txt"}]}),
            "text[0]", "not the URL of an S3 object")
    refused(cloud, cloud.spec(tmp_path, {"text": [{"objectUrl": f"{endpoint}/{cloud.bucket}/"}]}),
            "text[0]", "not an object")


def test_duplicate_urls(cloud: Cloud, tmp_path: Path) -> None:
    url = cloud.put("notes/a.txt", b"text\n")
    twice = cloud.spec(tmp_path, {"text": [{"objectUrl": url}, {"objectUrl": url}]})
    result = cloud.ok("import", "/Imported", twice, "--integration", "data")
    assert "imported 2" in result.stdout and "more than once" in result.stderr
    assert sorted(cloud.names("/Imported")) == ["a (2).txt", "a.txt"]  # as in Encord: two items
    entries = [{"objectUrl": url, "clientMetadata": {"v": 2}}, {"objectUrl": url}]
    skipping = cloud.spec(tmp_path, {"text": entries, "skip_duplicate_urls": True, "upsert_metadata": True})
    result = cloud.ok("import", "/Imported", skipping, "--integration", "data")
    assert "imported 0 into /Imported, 2 skipped" in result.stdout
    assert len(cloud.names("/Imported")) == 2
    info = json.loads(cloud.ok("info", "/Imported/a.txt", "--json").stdout)
    assert info["client_metadata"] == {"v": 2}  # upsert_metadata


def test_ten_thousand_entries_with_three_bad_ones(cloud: Cloud, tmp_path: Path) -> None:
    """Metadata given: nothing is read, so this is about checking and making items."""
    entries = [{"objectUrl": f"s3://{cloud.bucket}/frames/{n:05d}.jpg", "title": f"{n:05d}.jpg",
                "imageMetadata": {"mimeType": "image/jpeg", "fileSize": 1000 + n, "width": 64, "height": 48}}
               for n in range(10_000)]
    entries[17]["objectUrl"] = "s3://elsewhere/frames/x.jpg"
    entries[4_000]["imageMetadata"]["width"] = "wide"
    del entries[9_999]["objectUrl"]
    spec = cloud.spec(tmp_path, {"images": entries})
    result = cloud.run("import", "/Imported", spec, "--integration", "data")
    assert result.exit_code != 0 and "images[17]" in result.stderr and "2 more errors" in result.stderr, \
        explain(result)
    assert "nothing was imported" in result.stderr
    assert cloud.names("/Imported") == []
    report = tmp_path / "errors.jsonl"
    started = time.monotonic()
    result = cloud.run("import", "/Imported", spec, "--integration", "data", "--ignore-errors",
                       "--report", report)
    took = time.monotonic() - started
    assert result.exit_code == 1, explain(result)
    assert "imported 9997 into /Imported, 0 skipped, 3 failed" in result.stdout
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert [line["where"] for line in lines] == ["images[4000]", "images[9999]", "images[17]"] or \
        sorted(line["where"] for line in lines) == ["images[17]", "images[4000]", "images[9999]"]
    assert len(cloud.names("/Imported")) == 9_997
    assert took < 60, took
    with service_of(cloud.store) as service:
        item = service.lookup(service_actor(), "/Imported/00005.jpg")
        assert (item.size, item.media.width, item.media.kind.value) == (1005, 64, "image")


def service_actor():
    from encfs.model import Actor

    return Actor.local()


def test_an_import_the_server_left_is_completed_by_a_re_run(cloud: Cloud, tmp_path: Path) -> None:
    count = 400
    for n in range(count):
        cloud.s3.put_object(Bucket=cloud.bucket, Key=f"t/{n:04d}.txt", Body=f"file {n}\n".encode())
    spec = cloud.spec(tmp_path, {"text": [{"objectUrl": f"s3://{cloud.bucket}/t/{n:04d}.txt"}
                                          for n in range(count)], "skip_duplicate_urls": True})
    argv = [sys.executable, "-m", "encfs", "import", "/Imported", str(spec), "--integration", "data",
            "--ignore-errors", "--store", str(cloud.store)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        cloud.server.stop()
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        cloud.server.start()
    assert process.returncode != 0 and "stopped" in err and "cannot be reached" in err, (out, err)
    first = len(cloud.names("/Imported"))
    assert first < count
    result = cloud.run("import", "/Imported", spec, "--integration", "data")
    assert result.exit_code == 0, explain(result)
    assert f"imported {count - first} into /Imported, {first} skipped, 0 failed" in result.stdout
    assert sorted(cloud.names("/Imported")) == [f"{n:04d}.txt" for n in range(count)]


def test_client_metadata_is_checked_against_declared_keys(cloud: Cloud, tmp_path: Path) -> None:
    url = cloud.put("scored.txt", b"text\n")
    cloud.ok("metadata-schema", "add", "score", "number")
    refused(cloud, cloud.spec(tmp_path, {"text": [{"objectUrl": url, "clientMetadata": {"score": "high"}}]}),
            "'score' is declared number")
    cloud.ok("import", "/Imported", cloud.spec(tmp_path, {"text": [{"objectUrl": url,
                                                                  "clientMetadata": {"score": 0.7}}]}),
             "--integration", "data")
    assert cloud.ok("search", "--where", "meta.score>0.5").stdout.split() == ["/Imported/scored.txt"]
