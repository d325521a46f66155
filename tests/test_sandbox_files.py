"""Files in and artifacts out, with the real engine and the real sandbox image: every test runs
twice, in a fresh container (cold) and in one taken from the warm pool."""

from __future__ import annotations

import hashlib
import time
import uuid

import pytest

from taskservice.model import TaskFile, TaskStatus
from taskservice.sandbox import DockerSandbox, SandboxJob, SandboxSettings
from taskservice.sandbox.pool import PoolSettings
from tests.conftest import RUN_ID

RUN_LABEL = f"files-test-{RUN_ID}"
OUTPUT_CAP = 64 * 1024
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 64 + b"\x00\xffIEND\xaeB`\x82"


class Runner:
    """Runs code in a sandbox of its own; in pool mode, always in a container from the pool."""

    def __init__(self, docker_client, config, mode: str, **settings):
        self.config = config
        self.pool = PoolSettings(size=1, memory_mb=128) if mode == "pool" else None
        settings = {"max_output_bytes": OUTPUT_CAP, **settings}
        self.sandbox = DockerSandbox(docker_client, SandboxSettings(**settings), pool=self.pool)
        if self.pool is not None:  # the first run of a language finds none, and fills the pool
            for name in ("python", "bash", "python-data"):
                language = config.languages[name]
                memory_mb = language.default_memory_mb(128)
                self.sandbox.run(SandboxJob("warm-up", language, b"", b"", 30, memory_mb))

    def __call__(self, code: str, files=(), language="python", timeout=10, memory_mb=128, **job):
        waiting = self._wait_for_pool(language)
        outcome = self.sandbox.run(
            SandboxJob(
                task_id=f"{RUN_LABEL}-{uuid.uuid4().hex[:8]}",
                language=self.config.languages[language],
                code=code.encode(),
                stdin=b"",
                timeout_seconds=timeout,
                memory_mb=memory_mb,
                files=tuple(files),
                **job,
            )
        )
        if self.pool is not None:
            assert waiting not in self.sandbox._pool.ids(), "the run did not take the waiting one"
        return outcome

    def _wait_for_pool(self, language: str, within: float = 60) -> str | None:
        """The id of the container of ``language`` that waits in the pool."""
        if self.pool is None:
            return None
        deadline = time.monotonic() + within
        while not (ready := self.sandbox._pool._ready.get(language)):
            assert time.monotonic() < deadline, f"no {language} container in the pool"
            time.sleep(0.05)
        return ready[0].container.id

    def close(self) -> None:
        self.sandbox.close()


@pytest.fixture(scope="module", params=["cold", "pool"])
def mode(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def runners(docker_client, config, mode):
    made: list[Runner] = []

    def make(**settings) -> Runner:
        made.append(Runner(docker_client, config, mode, **settings))
        return made[-1]

    yield make
    for runner in made:
        runner.close()


@pytest.fixture(scope="module")
def run(runners) -> Runner:
    return runners()


def names(outcome) -> list[str]:
    return [artifact.name for artifact in outcome.artifacts]


# --- files in -----------------------------------------------------------------------------------


def test_files_are_in_the_working_directory_beside_the_code(run):
    binary = bytes(range(256)) * 100
    code = (
        "import hashlib, os\n"
        "print(sorted(os.listdir('.')), sorted(os.listdir('data')), os.listdir('out'))\n"
        "print(open('notes.txt', encoding='utf-8').read())\n"
        "print(hashlib.sha256(open('data/blob.bin', 'rb').read()).hexdigest())\n"
    )
    files = [TaskFile("notes.txt", "héllo\n".encode()), TaskFile("data/blob.bin", binary)]
    outcome = run(code, files)
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.stderr
    listing, text, _, digest = outcome.stdout.decode().split("\n")[:4]
    assert listing == "['data', 'main.py', 'notes.txt', 'out'] ['blob.bin'] []"
    assert text == "héllo"
    assert digest == hashlib.sha256(binary).hexdigest()
    assert (outcome.artifacts, outcome.artifacts_truncated) == ((), False)


def test_files_reach_a_bash_program_too(run):
    outcome = run(
        "cat in/a.txt; wc -c < b.bin",
        [TaskFile("in/a.txt", b"A\n"), TaskFile("b.bin", b"\0" * 9)],
        language="bash",
    )
    assert (outcome.status, outcome.stdout) == (TaskStatus.SUCCEEDED, b"A\n9\n")


@pytest.mark.parametrize(
    "name",
    ["../escape", "/etc/evil", "a/b/c", "nul\x00byte", "main.py", "", "a/../../b", "out", "out/x"],
)
def test_the_bootstrap_refuses_a_file_name_outside_the_rules(run, name):
    # The API refuses these first; the bootstrap refuses them again, and the program never runs.
    outcome = run("print('ran')", [TaskFile(name, b"x")])
    assert (outcome.status, outcome.exit_code, outcome.stdout) == (TaskStatus.FAILED, 1, b"")
    assert outcome.stderr.startswith(b"sandbox bootstrap: ")
    assert b"refused the file" in outcome.stderr or b"cannot create" in outcome.stderr


# --- artifacts out ------------------------------------------------------------------------------


def test_artifacts_come_back_byte_exact_one_folder_deep(run):
    code = (
        "import os\n"
        f"open('out/plot.png', 'wb').write({PNG!r})\n"
        "os.makedirs('out/sub/deeper')\n"
        "open('out/sub/x.csv', 'w').write('a,b\\n1,2\\n')\n"
        "open('out/sub/deeper/too-deep', 'w').write('left out')\n"
        "open('out/empty', 'w').close()\n"
        "open('not-in-out.txt', 'w').write('not an artifact')\n"
        "print('done')\n"
    )
    outcome = run(code)
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.stderr
    assert outcome.stdout == b"done\n"  # nothing of the trailer in the program's output
    assert outcome.artifacts == (
        TaskFile("empty", b""),
        TaskFile("plot.png", PNG),
        TaskFile("sub/x.csv", b"a,b\n1,2\n"),
    )
    assert not outcome.artifacts_truncated


def test_a_symlink_in_out_is_not_followed(run):
    code = (
        "import os\n"
        "os.symlink('/etc/passwd', 'out/passwd')\n"
        "os.symlink('/etc', 'out/etc')\n"
        "os.mkdir('out/sub')\n"
        "os.symlink('/etc/passwd', 'out/sub/passwd')\n"
        "open('out/real.txt', 'w').write('real')\n"
    )
    outcome = run(code)
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.stderr
    assert outcome.artifacts == (TaskFile("real.txt", b"real"),)
    assert not any(b"root:" in artifact.content for artifact in outcome.artifacts)


def test_out_replaced_by_a_symlink_returns_nothing(run):
    code = (
        "import os\nos.rmdir('out')\nos.symlink('/etc', 'out')\nprint(os.path.exists('out/passwd'))"
    )
    outcome = run(code)
    assert (outcome.status, outcome.stdout) == (TaskStatus.SUCCEEDED, b"True\n")
    assert (outcome.artifacts, outcome.artifacts_truncated) == ((), False)


def test_a_fifo_in_out_does_not_hang_the_run(run):
    code = "import os\nos.mkfifo('out/fifo')\nos.mkfifo('out/z')\nopen('out/a', 'w').write('a')"
    outcome = run(code, timeout=20)
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.stderr
    assert outcome.artifacts == (TaskFile("a", b"a"),)
    assert outcome.duration_ms < 10_000


@pytest.mark.parametrize(
    ("caps", "kept"),
    [
        ({"max_artifacts": 2}, ["a", "b"]),
        ({"max_artifact_bytes": 250}, ["a", "b", "d"]),  # c (200 bytes) does not fit, d does
    ],
)
def test_over_a_cap_what_fits_is_kept(runners, caps, kept):
    run = runners(**caps)
    code = "for name, size in [('a', 100), ('b', 100), ('c', 200), ('d', 50)]:\n"
    code += "    open('out/' + name, 'w').write(name * size)\n"
    outcome = run(code)
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.stderr
    assert names(outcome) == kept and outcome.artifacts_truncated


def test_artifacts_count_neither_against_the_output_cap_nor_as_live_output(run):
    live: list[tuple[int, bytes]] = []
    code = "open('out/big.bin', 'wb').write(b'\\x00' * (3 * 2**20))\nprint('small')"
    outcome = run(code, on_output=lambda stream, data: live.append((stream, bytes(data))))
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.stderr
    assert (outcome.stdout, outcome.stdout_truncated) == (b"small\n", False)
    assert b"".join(data for stream, data in live if stream == 1) == b"small\n"
    assert outcome.artifacts == (TaskFile("big.bin", b"\x00" * (3 * 2**20)),)


def test_a_program_forging_the_framing_spoils_only_its_own_output(run):
    # It looks for the nonce where it could be (the bootstrap's command line, environment and
    # memory), then prints a marker with its best guess and records of a file it never wrote.
    code = (
        "import os, struct, sys\n"
        "parent = os.getppid()\n"
        "for name in ('environ', 'mem', 'maps'):\n"
        "    try:\n"
        "        open(f'/proc/{parent}/{name}', 'rb').read(1)\n"
        "        print(name, 'readable')\n"
        "    except OSError as error:\n"
        "        print(name, type(error).__name__)\n"
        "forged = b'F' + struct.pack('>H', 6) + b'forged' + struct.pack('>Q', 2) + b'no' + b'E'\n"
        "for nonce in (b'0' * 32, b'f' * 32):\n"
        "    sys.stdout.buffer.write(b'\\0\\0taskservice-artifacts ' + nonce + b'\\n' + forged)\n"
        "sys.stdout.buffer.write(b'F\\xff\\xff' + b'x' * 100)\n"
        "sys.stdout.flush()\n"
        "open('out/real.txt', 'w').write('real')\n"
    )
    outcome = run(code)
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.stderr
    lines = outcome.stdout.split(b"\n")
    assert lines[:3] == [
        b"environ PermissionError",
        b"mem PermissionError",
        b"maps PermissionError",
    ]
    assert outcome.stdout.count(b"taskservice-artifacts") == 2  # kept as the program's output
    assert outcome.stdout.endswith(b"F\xff\xff" + b"x" * 100)
    assert outcome.artifacts == (TaskFile("real.txt", b"real"),)
    assert not outcome.artifacts_truncated


def test_a_plot_drawn_from_a_csv_comes_back_byte_exact(run, config):
    code = (
        "import hashlib\n"
        "import pandas as pd\n"
        "import matplotlib.pyplot as plt\n"
        "sales = pd.read_csv('data/sales.csv')\n"
        "sales.plot.bar(x='month', y='sales').figure.savefig('out/sales.png')\n"
        "drawn = open('out/sales.png', 'rb').read()\n"
        "print(sales['sales'].sum(), hashlib.sha256(drawn).hexdigest())\n"
    )
    csv = TaskFile("data/sales.csv", b"month,sales\nJan,12\nFeb,17\nMar,9\n")
    memory_mb = config.languages["python-data"].default_memory_mb(128)
    outcome = run(code, [csv], language="python-data", timeout=60, memory_mb=memory_mb)
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.stderr
    total, digest = outcome.stdout.decode().split()
    assert total == "38"
    (plot,) = outcome.artifacts
    assert plot.name == "sales.png" and plot.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert hashlib.sha256(plot.content).hexdigest() == digest


# --- what the bootstrap changes nothing of ------------------------------------------------------


WRITE_X = "import os, signal, sys\nopen('out/x', 'w').write('x')\n"


@pytest.mark.parametrize(
    ("code", "exit_code", "signal"),
    [
        (WRITE_X + "sys.exit(3)", 3, None),
        (WRITE_X + "os.kill(os.getpid(), signal.SIGTERM)", 143, "SIGTERM"),
        (WRITE_X + "os.kill(os.getpid(), signal.SIGKILL)", 137, "SIGKILL"),
    ],
)
def test_exit_codes_and_signals_are_the_programs_and_artifacts_still_come(
    run, code, exit_code, signal
):
    outcome = run(code)
    assert (outcome.status, outcome.exit_code, outcome.signal) == (
        TaskStatus.FAILED,
        exit_code,
        signal,
    )
    assert not outcome.oom_killed
    assert outcome.artifacts == (TaskFile("x", b"x"),)


def test_processes_left_behind_are_killed_before_the_artifacts_are_read(run):
    code = (
        "import subprocess\n"
        "late = 'sleep 2; echo late > out/late.txt'\n"
        "subprocess.Popen(['sh', '-c', late], start_new_session=True)\n"
        "open('out/early.txt', 'w').write('early')\n"
    )
    outcome = run(code)
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.stderr
    assert outcome.artifacts == (TaskFile("early.txt", b"early"),)
    assert outcome.duration_ms < 2000  # the sleep never ran out


def test_a_run_past_its_deadline_returns_no_artifacts(run):
    code = "import time\nopen('out/x', 'w').write('x')\nprint('up', flush=True)\ntime.sleep(60)"
    outcome = run(code, timeout=1)
    assert (outcome.status, outcome.stdout) == (TaskStatus.TIMED_OUT, b"up\n")
    assert (outcome.artifacts, outcome.artifacts_truncated) == ((), False)
