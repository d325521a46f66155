"""The python-data language: numpy, pandas, matplotlib and scipy in the hardened sandbox, with
the real engine and the real data image, cold and from the warm pool; its memory default."""

from __future__ import annotations

import contextlib
import re
import time

import pytest

from taskservice.model import TaskStatus
from taskservice.sandbox import DockerSandbox, SandboxJob, SandboxSettings
from taskservice.sandbox.pool import POOL_LABEL, PoolSettings
from taskservice.validation import TaskLimits, task_request
from tests.conftest import RUN_ID
from tests.test_api import auth, post, token_for

RUN_LABEL = f"data-runtime-test-{RUN_ID}"
SETTINGS = SandboxSettings(max_output_bytes=64 * 1024)
# The container a program runs in, as it sees it: the id in its cgroup path (cgroup v1).
WHO_AM_I = "print(open('/proc/self/cgroup').read().split('/docker/')[1][:64])"

COMPUTE = """\
import numpy as np, pandas as pd
from scipy import integrate, linalg, optimize
a = np.array([[3.0, 1.0], [1.0, 2.0]])
print(linalg.solve(a, np.array([9.0, 8.0])).round(6).tolist())
print(round(integrate.quad(lambda x: x * x, 0, 3)[0], 6))
print(round(optimize.brentq(lambda x: x**3 - 2, 0, 2), 6))
frame = pd.DataFrame({"g": ["a", "b", "a", "b"], "v": [1, 2, 3, 4]})
print(frame.groupby("g")["v"].sum().to_dict())
"""
COMPUTED = "[2.0, 3.0]\n9.0\n1.259921\n{'a': 4, 'b': 6}\n"


@pytest.fixture(scope="module")
def sandbox(docker_client):
    return DockerSandbox(docker_client, SETTINGS)


# Generous: importing the libraries takes seconds on a loaded machine.
def data_job(config, code: str, memory_mb=None, timeout=90, language="python-data"):
    chosen = config.languages[language]
    return SandboxJob(
        task_id=f"{RUN_LABEL}-{language}",
        language=chosen,
        code=code.encode(),
        stdin=b"",
        timeout_seconds=timeout,
        memory_mb=memory_mb or chosen.default_memory_mb(config.task_memory_mb),
    )


def succeeded(outcome) -> str:
    assert outcome.status is TaskStatus.SUCCEEDED, (outcome.status, outcome.stderr[-2000:])
    return outcome.stdout.decode()


# --- without an engine ---------------------------------------------------------------------


def test_a_task_without_memory_gets_its_languages_default():
    limits = TaskLimits(
        languages=frozenset({"python", "python-data"}),
        timeout_default=10,
        timeout_max=60,
        memory_default_mb=256,
        memory_max_mb=1024,
        max_code_bytes=1000,
        max_stdin_bytes=1000,
        language_memory_mb={"python-data": 512},
    )
    assert task_request({"code": "1", "language": "python-data"}, limits).memory_mb == 512
    assert task_request({"code": "1", "language": "python"}, limits).memory_mb == 256
    given = {"code": "1", "language": "python-data", "memory_mb": 100}
    assert task_request(given, limits).memory_mb == 100  # what the task asks for wins


# --- with the engine -----------------------------------------------------------------------


def test_numpy_pandas_and_scipy_compute(sandbox, config):
    assert succeeded(sandbox.run(data_job(config, COMPUTE))) == COMPUTED


def test_pandas_reads_a_csv_the_program_wrote(sandbox, config):
    code = (
        "import pandas as pd\n"
        "open('/tmp/prices.csv', 'w').write('day,price\\n1,10.5\\n2,11.0\\n3,12.5\\n')\n"
        "frame = pd.read_csv('prices.csv')\n"  # the working directory is /tmp
        "print(len(frame), frame['price'].mean(), frame['price'].max())\n"
    )
    assert succeeded(sandbox.run(data_job(config, code))) == "3 11.333333333333334 12.5\n"


def test_matplotlib_saves_a_png_on_the_read_only_root(sandbox, config):
    code = (
        "import os\n"
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [1, 4, 9])\n"
        "plt.title('squares')\n"
        "plt.savefig('/tmp/plot.png')\n"
        "data = open('/tmp/plot.png', 'rb').read()\n"
        "print(data[:8].hex(), os.path.getsize('/tmp/plot.png'))\n"
        "print(plt.get_backend())\n"
    )
    signature, size, backend = succeeded(sandbox.run(data_job(config, code))).split()
    assert signature == b"\x89PNG\r\n\x1a\n".hex()
    assert int(size) > 5000  # a real drawing, not an empty canvas
    assert backend.lower() == "agg"


def test_the_version_names_the_libraries(sandbox, config):
    version = sandbox.probe_version(config.languages["python-data"])
    assert re.fullmatch(
        r"3\.\d+\.\d+ \(numpy \d[\d.]*, pandas \d[\d.]*, matplotlib \d[\d.]*, scipy \d[\d.]*\)",
        version,
    ), version


def test_the_languages_memory_default_applies_from_submit_to_container(client, db, sandbox, config):
    """A task that gives no memory gets its language's: 300 MB fit in python-data's, not in
    python's 256 MB."""
    token = token_for(client, "data-ada")
    allocate = "x = bytearray(300 * 1024 * 1024)\nx[::4096] = b'y' * len(x[::4096])\nprint('ok')"
    memory = {}
    for language in ("python-data", "python"):
        body = {"code": allocate, "language": language}
        response = post(client, "/task", body, headers=auth(token))
        assert response.status_code == 201, response.text
        with db.transaction() as cursor:
            cursor.execute("SELECT memory_mb FROM tasks WHERE id = %s", (response.json["task_id"],))
            memory[language] = cursor.fetchone()["memory_mb"]
    assert memory == {"python-data": 512, "python": config.task_memory_mb}
    roomy = sandbox.run(data_job(config, allocate, memory["python-data"]))
    assert succeeded(roomy) == "ok\n"
    tight = sandbox.run(data_job(config, allocate, memory["python"], language="python"))
    assert tight.status is TaskStatus.FAILED and tight.oom_killed


@contextlib.contextmanager
def pooled_sandbox(docker_client, config):
    settings = PoolSettings(size=1, max_age_seconds=300, memory_mb=config.task_memory_mb)
    sandbox = DockerSandbox(docker_client, SETTINGS, pool=settings, remove_in_background=True)
    try:
        yield sandbox
    finally:
        sandbox.close()


def test_the_pool_keeps_python_data_containers_with_its_memory_and_environment(
    docker_client, config
):
    with pooled_sandbox(docker_client, config) as sandbox:
        assert succeeded(sandbox.run(data_job(config, "print(1)"))) == "1\n"  # the pool fills
        deadline = time.monotonic() + 60
        while True:
            filters = {"label": f"{POOL_LABEL}={sandbox._pool.pool_id}", "status": "running"}
            waiting = docker_client.api.containers(filters=filters)
            if waiting and not sandbox._pool._filling_ids:
                break
            assert time.monotonic() < deadline, "the python-data pool never filled"
            time.sleep(0.2)
        pooled = docker_client.api.inspect_container(waiting[0]["Id"])
        assert pooled["Config"]["Image"] == config.sandbox_data_image
        assert pooled["HostConfig"]["Memory"] == 512 * 1024 * 1024
        assert "MPLBACKEND=Agg" in pooled["Config"]["Env"]
        # A task with the language's default memory takes it as it is, and computes there.
        outcome = sandbox.run(data_job(config, COMPUTE + WHO_AM_I))
        *computed, ran_in = succeeded(outcome).splitlines(keepends=True)
        assert "".join(computed) == COMPUTED
        assert ran_in.strip() == waiting[0]["Id"]
