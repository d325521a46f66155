"""Files in and artifacts out with the real processes: the API (gunicorn), a worker and Docker.

A CSV sent as a file is read by the program (pandas, in `python-data`), a matplotlib PNG it
saves in out/ comes back byte for byte as `image/png`, a symbolic link it leaves there is not
followed, and Judge0's `additional_files` reach the program through the official SDK.
"""

from __future__ import annotations

import base64
import hashlib
import uuid

import judge0
import pytest
import requests
from judge0 import Filesystem, Submission
from judge0.filesystem import File

from tests.conftest import TEST_JWT_SECRET
from tests.service import ApiUser, running_service

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def service(config, tmp_path_factory, docker_client):
    with running_service(
        config,
        TEST_JWT_SECRET,
        tmp_path_factory.mktemp("files"),
        QUEUE_NAME=f"{config.queue_name}.files.{uuid.uuid4().hex[:8]}",
    ) as (base, _api, _worker):
        yield base


@pytest.fixture(scope="module")
def user(service) -> ApiUser:
    return ApiUser(service)


def download(user: ApiUser, url: str) -> requests.Response:
    response = requests.get(user.base + url, headers=user.headers, timeout=10)
    assert response.status_code == 200, response.text
    return response


def test_files_reach_the_program_and_out_comes_back(user):
    blob = bytes(range(256))
    code = (
        "import hashlib, os\n"
        "print(open('data/in.csv').read(), end='')\n"
        "print(hashlib.sha256(open('blob.bin', 'rb').read()).hexdigest())\n"
        "os.makedirs('out/sub', exist_ok=True)\n"
        "open('out/report.txt', 'w').write('three rows\\n')\n"
        "open('out/sub/copy.bin', 'wb').write(open('blob.bin', 'rb').read())\n"
        "os.symlink('/etc/passwd', 'out/passwd')\n"
    )
    files = [
        {"name": "data/in.csv", "content": "a,b\n1,2\n"},
        {"name": "blob.bin", "content": base64.b64encode(blob).decode(), "encoding": "base64"},
    ]
    result = user.run(code, files=files)
    assert result["status"] == "succeeded", result
    assert result["stdout"] == f"a,b\n1,2\n{hashlib.sha256(blob).hexdigest()}\n"
    listed = {artifact["name"]: artifact for artifact in result["artifacts"]}
    # The link to /etc/passwd is not followed: not listed at all.
    assert set(listed) == {"report.txt", "sub/copy.bin"}, listed
    assert "artifacts_truncated" not in result
    report = download(user, listed["report.txt"]["url"])
    assert report.content == b"three rows\n"
    assert report.headers["Content-Type"] == "text/plain; charset=utf-8"
    copy = download(user, listed["sub/copy.bin"]["url"])
    assert copy.content == blob
    assert copy.headers["Content-Type"] == "application/octet-stream"
    assert copy.headers["ETag"] == f'"{hashlib.sha256(blob).hexdigest()}"'


PLOT = """
import hashlib, os
import pandas as pd
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
sales = pd.read_csv("data/sales.csv")
print(int(sales["sales"].sum()), sales["month"].iloc[-1])
os.makedirs("out", exist_ok=True)
figure = sales.plot.bar(x="month", y="sales", legend=False).figure
figure.savefig("out/sales.png")
print(hashlib.sha256(open("out/sales.png", "rb").read()).hexdigest())
"""


def test_a_csv_read_by_pandas_and_a_png_plot_come_back_byte_exact(user):
    csv = "month,sales\nJan,12\nFeb,17\nMar,9\nApr,21\n"
    result = user.run(
        PLOT,
        language="python-data",
        timeout=60,
        memory_mb=512,
        files=[{"name": "data/sales.csv", "content": csv}],
    )
    assert result["status"] == "succeeded", result
    total, last, digest = result["stdout"].split()
    assert (total, last) == ("59", "Apr")
    (plot,) = result["artifacts"]
    assert (plot["name"], plot["content_type"], plot["sha256"]) == (
        "sales.png",
        "image/png",
        digest,
    )
    png = download(user, plot["url"])
    assert png.headers["Content-Type"] == "image/png"
    assert png.headers["X-Content-Type-Options"] == "nosniff"
    assert png.content.startswith(PNG_MAGIC)
    assert hashlib.sha256(png.content).hexdigest() == digest
    assert len(png.content) == plot["size"]


def test_judge0_additional_files_reach_the_program(user):
    response = requests.post(
        f"{user.base}/api-keys", json={"name": "files"}, headers=user.headers, timeout=10
    )
    assert response.status_code == 201, response.text
    client = judge0.Client(
        endpoint=f"{user.base}/judge0", headers={"X-Auth-Token": response.json()["key"]}
    )
    files = Filesystem(content=[File(name="data/points.csv", content="x,y\n1,2\n3,4\n")])
    submission = Submission(
        source_code="print(sum(1 for _ in open('data/points.csv')) - 1)",
        language=71,
        additional_files=files,
    )
    done = judge0.run(client=client, submissions=submission)
    assert done.status == judge0.Status.ACCEPTED, done
    assert done.stdout == "2\n"
