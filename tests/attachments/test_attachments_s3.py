"""The S3 path, against a local S3-compatible server (moto's, from PyPI): uploads land in the
bucket under their content hash, are served through the app's own view, and are removed with
their conversation."""

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from django.test import Client
from django.urls import reverse

from conversations.attachments import services
from conversations.chat import services as chat_services
from tests.conftest import BASE_DIR
from tests.support import attachment_files as files
from tests.support.factories import turn_with_attachments

pytestmark = pytest.mark.django_db
BUCKET = "chatsite-test"
KEYS = {"access_key": "testing", "secret_key": "testing"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("moto's S3 server did not start")
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def bucket(s3_endpoint: str, settings: Any) -> Any:
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": s3_endpoint,
                "region_name": "us-east-1",
                "default_acl": None,
                "file_overwrite": True,
                **KEYS,
            },
        },
    }
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def _keys(client: Any) -> list[str]:
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def test_upload_serve_and_delete_through_s3(
    bucket: Any, owner_client: Client, user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    response = owner_client.post(
        reverse("attachment_upload"), {"file": _file(files.pdf(pages=2), "report.pdf")}
    )
    assert response.status_code == 201, response.content
    attachment = services.selectors.attachment_get_for_user(
        attachment_id=response.json()["id"], user=user
    )
    assert attachment is not None
    assert _keys(bucket) == [f"attachments/{user.pk}/{attachment.sha256}.pdf"]
    stored = bucket.get_object(Bucket=BUCKET, Key=attachment.storage_name)["Body"].read()
    assert stored == files.pdf(pages=2)

    served = owner_client.get(reverse("attachment_file", args=[attachment.id]))
    assert b"".join(served.streaming_content) == stored
    assert served["Content-Disposition"].startswith("attachment;")

    conversation = chat_services.conversation_create(owner=user)
    turn_with_attachments(conversation, "read", [attachment])
    with django_capture_on_commit_callbacks(execute=True):
        chat_services.conversation_delete(conversation_id=conversation.id, owner=user)
    assert _keys(bucket) == []


def test_sweep_lists_the_bucket(
    bucket: Any, user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    import datetime

    from django.utils import timezone

    services.attachment_upload(owner=user, data=files.png(), filename="kept.png")
    bucket.put_object(Bucket=BUCKET, Key="attachments/424242/" + "f" * 64 + ".png", Body=b"stray")
    with django_capture_on_commit_callbacks(execute=True):
        result = services.attachments_sweep(now=timezone.now() + datetime.timedelta(hours=1))
    assert result.files == 1
    assert len(_keys(bucket)) == 2  # the kept image and its thumbnail


def test_settings_read_the_bucket_from_the_environment() -> None:
    env = {
        **os.environ,
        "DJANGO_DEBUG": "1",
        "CHAT_S3_BUCKET": "my-bucket",
        "CHAT_S3_ENDPOINT_URL": "https://s3.example.com",
        "CHAT_S3_REGION": "eu-west-3",
        "CHAT_S3_PREFIX": "chat",
    }
    code = (
        "import json; from chatsite import settings as s; "
        "print(json.dumps(s.STORAGES['default'], default=str))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=BASE_DIR, capture_output=True, check=True
    )
    default = json.loads(out.stdout)
    assert default["BACKEND"] == "storages.backends.s3.S3Storage"
    assert default["OPTIONS"]["bucket_name"] == "my-bucket"
    assert default["OPTIONS"]["endpoint_url"] == "https://s3.example.com"
    assert default["OPTIONS"]["region_name"] == "eu-west-3"
    assert default["OPTIONS"]["location"] == "chat"
    # Files are private: served through the app, never by a public bucket URL.
    assert default["OPTIONS"]["default_acl"] is None


def _file(data: bytes, name: str) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data)
