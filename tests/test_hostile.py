"""Hostile code against the whole service: the real API, a real worker, real Docker.

Each test submits one attack over HTTP, checks the task's final status and fields, then checks
that the *next* task on the same worker (one worker, one task at a time) runs normally in a
fresh sandbox. The last tests check what the suite left behind: no container of its tasks, and
a worker whose memory has not grown past a bound.

How code and output move (see the docstring of taskservice/sandbox/spec.py): code and stdin
go into the container over the attach socket, output comes back over it, capped in memory; the
worker never opens, copies or chowns a path inside the container, so nothing a program plants in
its filesystem can reach the host. `test_symlinks_planted_in_tmp_change_nothing_outside` checks
the consequence.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import docker.errors
import pytest

from taskservice.sandbox.janitor import parse_engine_time
from taskservice.sandbox.spec import SERVICE_LABEL, SERVICE_LABEL_VALUE, TASK_LABEL, TIMEOUT_LABEL
from tests.conftest import RUN_ID, TEST_JWT_SECRET
from tests.service import ApiUser, Process, running_service

OUTPUT_CAP = 64 * 1024
# What the worker may grow by over the whole suite (measured: under 1 MiB). It keeps at most two
# output buffers of OUTPUT_CAP per running task and nothing across tasks, while the suite throws
# more than 2 GB of output and a 100 MB line at it: a worker that buffered output would grow by
# hundreds of MiB, one that kept each task's capped output by several MiB over these ~60 tasks.
WORKER_GROWTH_BOUND_BYTES = 8 * 2**20

# The next task after each attack: a fresh /tmp holding only its own code file and the empty
# folder for its artifacts, the sandbox user, and 32 MiB that the memory limit allows.
CANARY = (
    "import os\nprint(sorted(os.listdir('/tmp')), os.listdir('/tmp/out'), os.getuid(),"
    " len(bytearray(32 * 2**20)))"
)
CANARY_STDOUT = "['main.py', 'out'] [] 65534 33554432\n"

# The variables the sandbox itself sets (DockerSandbox's environment, and the engine's HOSTNAME
# from the container's hostname); every other variable in there comes from the image.
SANDBOX_ENVIRONMENT = {
    "HOME": "/tmp",
    "HOSTNAME": "sandbox",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}


@dataclass
class Service:
    base: str
    worker: Process
    worker_rss_after_warm_up: int
    orphan_id: str


class RecordingUser(ApiUser):
    """An ApiUser that notes the id of every task it submits, for the check after the suite."""

    def __init__(self, base: str, submitted: list[str]):
        super().__init__(base)
        self._submitted = submitted

    def submit(self, code: str, **options) -> str:
        task_id = super().submit(code, **options)
        self._submitted.append(task_id)
        return task_id


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@pytest.fixture(scope="module", params=["2", "0"], ids=["pool", "cold"])
def pool_size(request) -> str:
    """The whole suite runs twice: with a warm pool (the default), and with every container
    created for its task."""
    return request.param


@pytest.fixture(scope="module")
def orphan(docker_client, config, pool_size):
    """A sandbox left by a worker that died: labelled, with a time limit of 0 s, running."""
    container = docker_client.containers.create(
        config.sandbox_image,
        ["sleep", "600"],
        labels={
            SERVICE_LABEL: SERVICE_LABEL_VALUE,
            TASK_LABEL: f"hostile-orphan-{RUN_ID}-{pool_size}",
            TIMEOUT_LABEL: "0",
        },
        network_mode="none",
        user="65534:65534",
    )
    container.start()
    container.reload()  # its State.StartedAt, read before any janitor may remove it
    try:
        yield container
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


@pytest.fixture(scope="module")
def submitted_task_ids(pool_size) -> list[str]:
    """Every task this module's run submitted (the selected tests' and the warm-up's)."""
    return []


@pytest.fixture(scope="module")
def service(config, tmp_path_factory, orphan, submitted_task_ids, pool_size):
    with running_service(
        config,
        TEST_JWT_SECRET,
        tmp_path_factory.mktemp("hostile"),
        QUEUE_NAME=f"{config.queue_name}.hostile.{pool_size}",
        SANDBOX_POOL_SIZE=pool_size,
        MAX_OUTPUT_BYTES=str(OUTPUT_CAP),
        WORKER_CONCURRENCY="1",  # every "next task" runs on the same worker thread
        # Named explicitly (it is the default) so that the environment test has it to look for.
        DOCKER_HOST=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
    ) as (base, _api, worker):
        warm_up = RecordingUser(base, submitted_task_ids)
        for _ in range(3):
            assert run(warm_up, CANARY)["stdout"] == CANARY_STDOUT
        yield Service(base, worker, rss_bytes(worker.pid), orphan.id)


@pytest.fixture(scope="module")
def user(service, submitted_task_ids) -> ApiUser:
    return RecordingUser(service.base, submitted_task_ids)


def run(user: ApiUser, code: str, **options) -> dict:
    return user.wait(user.submit(code, **options))


def assert_next_task_runs_normally(user: ApiUser) -> None:
    result = run(user, CANARY, timeout=10)
    assert (result["status"], result["exit_code"], result["stdout"], result["stderr"]) == (
        "succeeded",
        0,
        CANARY_STDOUT,
        "",
    )


def assert_killed_at_deadline(result: dict, timeout: int) -> None:
    assert result["status"] == "timed_out"
    assert (result["exit_code"], result["signal"]) == (137, "SIGKILL")
    assert result["error"] == f"The program ran past its {timeout} s time limit and was killed."
    assert result["timeout"] == timeout
    # Not before the deadline, and not long after it: the kill is the worker's own.
    assert timeout * 1000 <= result["duration_ms"] < timeout * 1000 + 5000


# --- processes ------------------------------------------------------------------------------


def test_fork_bomb(user):
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = run(user, code, timeout=2)
    assert_killed_at_deadline(result, 2)
    assert result["oom_killed"] is False
    assert_next_task_runs_normally(user)


def test_shell_fork_bomb(user):
    # The pids limit makes bash's forks fail; the bomb then collapses, or runs to the deadline.
    # Each level waits for its children: in the classic `:(){ :|:& };:` every shell returns at
    # once, so the first one could end (and the sandbox kill what it left) before the bomb
    # reached the limit, a clean exit with nothing to check.
    result = run(user, ":(){ :|:& wait; };:", language="bash", timeout=3)
    assert result["status"] in ("succeeded", "timed_out")
    assert "fork: retry: Resource temporarily unavailable" in result["stderr"], result
    assert result["duration_ms"] < 3000 + 5000
    assert_next_task_runs_normally(user)


def test_process_count_is_capped(user):
    code = (
        "import os, time\n"
        "children = 0\n"
        "try:\n"
        "    while children < 1000:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        children += 1\n"
        "except OSError as error:\n"
        "    print(error.strerror)\n"
        "print(children)\n"
    )
    result = run(user, code, timeout=5)
    assert result["status"] == "succeeded", result
    reason, children = result["stdout"].splitlines()
    assert reason == "Resource temporarily unavailable"
    # TASK_PIDS is 64, and docker-init, the bootstrap and the program itself are three of them.
    assert 50 <= int(children) <= 61
    assert_next_task_runs_normally(user)


def test_infinite_loop(user):
    result = run(user, "while True:\n    pass", timeout=1)
    assert_killed_at_deadline(result, 1)
    assert_next_task_runs_normally(user)


def test_process_ignoring_sigterm(user):
    code = (
        "import signal, time\n"
        "for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n"
        "    signal.signal(number, signal.SIG_IGN)\n"
        "print('ignoring', flush=True)\n"
        "while True:\n"
        "    time.sleep(0.01)\n"
    )
    result = run(user, code, timeout=1)
    assert_killed_at_deadline(result, 1)
    assert result["stdout"] == "ignoring\n"
    assert_next_task_runs_normally(user)


def test_sleeping_forever_after_closing_stdout_and_stderr(user):
    # The output stream never ends while the program lives: only the deadline stops it.
    code = "import os, time\nprint('bye', flush=True)\nos.close(1)\nos.close(2)\ntime.sleep(3600)"
    result = run(user, code, timeout=1)
    assert_killed_at_deadline(result, 1)
    assert result["stdout"] == "bye\n"
    assert_next_task_runs_normally(user)


def test_background_child_outliving_the_program(user):
    # docker-init (PID 1) exits with the program, and the kernel then kills the whole container.
    code = (
        "import os, subprocess\n"
        "subprocess.Popen(['sh', '-c', 'sleep 5; echo late'], start_new_session=True)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    os.execvp('sh', ['sh', '-c', 'sleep 5; echo daemon'])\n"
        "print('main done')\n"
    )
    result = run(user, code, timeout=10)
    assert (result["status"], result["exit_code"], result["stdout"]) == (
        "succeeded",
        0,
        "main done\n",
    )
    assert result["duration_ms"] < 5000  # the children's 5 s sleep never ran out
    assert_next_task_runs_normally(user)


# --- memory ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "hog = bytearray(1 << 30)\nprint('survived')",
        "hogs = []\nwhile True:\n    hogs.append(bytearray(1 << 20))",
    ],
    ids=["at-once", "gradually"],
)
def test_memory_bomb(user, code):
    result = run(user, code, memory_mb=64)
    assert (result["status"], result["exit_code"], result["signal"]) == ("failed", 137, "SIGKILL")
    assert result["oom_killed"] is True
    assert result["error"] == "A process ran out of memory (limit 64 MiB) and was killed."
    assert result["stdout"] == ""
    assert result["memory_mb"] == 64
    assert_next_task_runs_normally(user)


def test_memory_bomb_in_a_child_while_the_parent_exits_0(user):
    code = (
        "import os\n"
        "if os.fork() == 0:\n"
        "    hog = bytearray(1 << 30)\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        "print('parent exits 0')\n"
    )
    result = run(user, code, memory_mb=64)
    assert (result["status"], result["exit_code"], result["signal"]) == ("failed", 0, None)
    assert result["oom_killed"] is True
    assert result["stdout"] == "parent exits 0\n"
    assert_next_task_runs_normally(user)


# --- output ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_printing_a_gigabyte(user, stream):
    # The worker kills the program at the cap: the test never carries more than 64 KiB of it.
    code = (
        f"import sys\nchunk = b'x' * 2**20\nfor _ in range(1024):\n"
        f"    sys.{stream}.buffer.write(chunk)"
    )
    result = run(user, code, timeout=10)
    other = "stderr" if stream == "stdout" else "stdout"
    assert (result["status"], result["exit_code"], result["signal"]) == ("failed", 137, "SIGKILL")
    assert result[stream] == "x" * OUTPUT_CAP
    assert result[f"{stream}_truncated"] is True and result[f"{other}_truncated"] is False
    assert result[other] == ""
    assert result["error"] == (
        f"The program wrote more than {OUTPUT_CAP} bytes to {stream} and was killed."
    )
    assert result["duration_ms"] < 5000
    assert_next_task_runs_normally(user)


def test_one_line_of_100_mb(user):
    result = run(user, "import sys\nsys.stdout.buffer.write(b'y' * 10**8)", memory_mb=512)
    assert (result["status"], result["stdout_truncated"]) == ("failed", True)
    assert result["stdout"] == "y" * OUTPUT_CAP
    assert result["oom_killed"] is False
    assert_next_task_runs_normally(user)


def test_binary_and_invalid_utf8_output(user):
    data = bytes(range(256)) + b"\xc3\x28 \xed\xa0\x80 \xf0\x9f\x90 ok \xe2\x9c\x93"
    code = (
        "import sys\n"
        f"data = {data!r}\n"
        "sys.stdout.buffer.write(data)\n"
        "sys.stderr.buffer.write(data[::-1])\n"
    )
    result = run(user, code)
    assert (result["status"], result["exit_code"]) == ("succeeded", 0)
    # Kept byte for byte in the store; what is not UTF-8 is shown as U+FFFD.
    assert result["stdout"] == data.decode("utf-8", errors="replace")
    assert result["stderr"] == data[::-1].decode("utf-8", errors="replace")
    assert "\ufffd" in result["stdout"] and result["stdout"].endswith(" ok ✓")
    assert_next_task_runs_normally(user)


def test_nul_bytes_in_output(user):
    result = run(user, "import sys\nsys.stdout.write('a\\0b\\0\\n')\nsys.stderr.write('\\0')")
    assert (result["status"], result["stdout"], result["stderr"]) == ("succeeded", "a\0b\0\n", "\0")
    assert_next_task_runs_normally(user)


# --- files ----------------------------------------------------------------------------------


def test_filling_tmp(user):
    code = (
        "written = 0\n"
        "try:\n"
        "    with open('/tmp/fill', 'wb') as f:\n"
        "        while True:\n"
        "            f.write(b'z' * 65536)\n"
        "            f.flush()\n"
        "            written += 65536\n"
        "except OSError as error:\n"
        "    print(error.strerror)\n"
        "print(written)\n"
    )
    result = run(user, code)
    assert result["status"] == "succeeded", result
    reason, written = result["stdout"].splitlines()
    assert reason == "No space left on device"
    # TASK_TMP_MB is 16, and /tmp keeps room for the task's files (MAX_FILES_BYTES, 8 MiB, and
    # 1 MiB for their pages' rounding; SandboxSettings.files_room_mb), which this one has not.
    assert (16 + 9 - 1) * 2**20 <= int(written) <= (16 + 9) * 2**20
    assert_next_task_runs_normally(user)  # whose /tmp holds only its own code


def test_creating_thousands_of_files(user):
    # Each file costs kernel memory; /tmp's inode cap (1024 per MiB) stops them first.
    code = (
        "created = 0\n"
        "try:\n"
        "    while created < 100_000:\n"
        "        open(f'/tmp/f{created}', 'w').close()\n"
        "        created += 1\n"
        "except OSError as error:\n"
        "    print(error.strerror)\n"
        "print(created)\n"
    )
    result = run(user, code, timeout=10)
    assert result["status"] == "succeeded", result
    reason, created = result["stdout"].splitlines()
    assert reason == "No space left on device"
    assert 10_000 <= int(created) < 16 * 1024
    assert result["oom_killed"] is False
    assert_next_task_runs_normally(user)


def test_writing_to_the_root_filesystem(user):
    code = (
        "import errno\n"
        "for path in ['/evil', '/etc/passwd', '/usr/bin/python3', '/var/tmp/x', '/home/x',\n"
        "             '/root/x', '/dev/shm/x', '/proc/sys/kernel/hostname', '/sys/kernel/x']:\n"
        "    try:\n"
        "        open(path, 'a').close()\n"
        "        print(path, 'written')\n"
        "    except OSError as error:\n"
        "        print(path, errno.errorcode[error.errno])\n"
    )
    result = run(user, code)
    assert result["status"] == "succeeded", result
    outcomes = dict(line.split() for line in result["stdout"].splitlines())
    assert len(outcomes) == 9
    assert set(outcomes.values()) <= {"EROFS", "EACCES", "ENOENT"}, outcomes
    assert_next_task_runs_normally(user)


def test_symlinks_planted_in_tmp_change_nothing_outside(user, tmp_path):
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("untouched")
    host_paths = [
        sentinel,
        tmp_path,
        Path("/etc/passwd"),
        Path("/etc/shadow"),
        Path("/var/run/docker.sock"),
    ]
    before = {path: os.lstat(path) for path in host_paths}
    targets = [str(p) for p in host_paths] + ["/", "/proc/1/root", "/proc/self/cwd"]
    code = (
        "import os\n"
        f"for number, target in enumerate({targets!r}):\n"
        "    os.symlink(target, f'/tmp/link{number}')\n"
        "    try:\n"
        "        with open(f'/tmp/link{number}', 'a') as f:\n"
        "            f.write('planted')\n"
        "    except OSError:\n"
        "        pass\n"
        # The code file too: a worker that read it back, or copied /tmp out, would follow it.
        "os.replace('/tmp/link0', '/tmp/main.py')\n"
        "os.symlink('/', '/tmp/stdout')\n"
        "os.symlink('/var/run/docker.sock', '/tmp/stderr')\n"
        "print(sorted(name for name in os.listdir('/tmp') if os.path.islink('/tmp/' + name)))\n"
    )
    result = run(user, code)
    assert result["status"] == "succeeded", result
    planted = [f"link{n}" for n in range(1, len(targets))] + ["main.py", "stderr", "stdout"]
    assert result["stdout"] == f"{sorted(planted)}\n"
    assert sentinel.read_text() == "untouched"
    assert sorted(tmp_path.iterdir()) == [sentinel]
    for path, stat in before.items():
        now = os.lstat(path)
        assert (now.st_mode, now.st_uid, now.st_gid, now.st_mtime_ns, now.st_size) == (
            stat.st_mode,
            stat.st_uid,
            stat.st_gid,
            stat.st_mtime_ns,
            stat.st_size,
        ), path
    assert_next_task_runs_normally(user)  # whose /tmp has none of the links


def test_the_next_task_sees_nothing_of_the_last(user):
    # A file in /tmp, and a process in a session of its own that would outlive the program.
    leave_behind = (
        "import subprocess\n"
        "open('/tmp/left-behind', 'w').write('left-behind')\n"
        "subprocess.Popen(['sleep', '600'], start_new_session=True)\n"
        "print(open('/proc/self/cgroup').read().split('/docker/')[1][:64])\n"
    )
    first = run(user, leave_behind)
    assert first["status"] == "succeeded", first
    look = (
        "import os\n"
        "print(sorted(os.listdir('/tmp')))\n"
        # argv[0] of each process: docker-init, the bootstrap, the program, and no other.
        "print(sorted(open(f'/proc/{p}/cmdline').read().split(chr(0))[0]"
        " for p in os.listdir('/proc') if p.isdigit()))\n"
        "print(open('/proc/self/cgroup').read().split('/docker/')[1][:64])\n"
    )
    second = run(user, look)
    assert second["status"] == "succeeded", second
    files, processes, container = second["stdout"].splitlines()
    assert container != first["stdout"].strip()  # a container of its own
    assert files == "['main.py', 'out']"
    assert processes == "['/sbin/docker-init', 'python3', 'python3']"


# --- secrets --------------------------------------------------------------------------------


def test_environment_holds_no_secrets(user, service, config, docker_client):
    code = (
        "import json, os\n"
        "print(json.dumps(dict(os.environ)))\n"
        "init = open('/proc/1/environ', 'rb').read().decode().split('\\0')\n"
        "print(json.dumps(dict(e.split('=', 1) for e in init if e)))\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    for name in ('environ', 'cmdline'):\n"
        "        try:\n"
        "            print(open(f'/proc/{pid}/{name}', 'rb').read())\n"
        "        except OSError:\n"
        "            pass\n"
    )
    result = run(user, code)
    assert result["status"] == "succeeded", result
    own, init, *dump = result["stdout"].splitlines()
    # The program's and docker-init's (PID 1) environments.
    environments = {"program": json.loads(own), "init": json.loads(init)}
    assert len(dump) >= 4  # the environ and cmdline of docker-init and of the program at least

    worker = dict(
        entry.split("=", 1)
        for entry in Path(f"/proc/{service.worker.pid}/environ").read_text().split("\0")
        if "=" in entry
    )
    # The worker does hold what must not reach the sandbox.
    assert worker["JWT_SECRET"] == TEST_JWT_SECRET
    assert (worker["DATABASE_URL"], worker["AMQP_URL"]) == (config.database_url, config.amqp_url)
    assert worker["DOCKER_HOST"].startswith("unix://")
    # What the image defines is the image's (PATH, LANG, a pulled python image's GPG_KEY,
    # PYTHON_VERSION...), whether or not the worker has the same value.
    image = docker_client.images.get(config.sandbox_image).attrs["Config"].get("Env") or []
    image_environment = dict(entry.split("=", 1) for entry in image)
    for where, environment in environments.items():
        assert {name: environment.get(name) for name in SANDBOX_ENVIRONMENT} == (
            SANDBOX_ENVIRONMENT
        ), where
        # No variable of the worker's that neither the image nor the sandbox sets...
        foreign = set(environment) - set(image_environment) - set(SANDBOX_ENVIRONMENT)
        assert foreign & set(worker) == set(), where
        # ...and none with the worker's value unless the image's value is the same.
        inherited = {
            name
            for name, value in worker.items()
            if environment.get(name) == value and image_environment.get(name) != value
        }
        assert inherited <= set(SANDBOX_ENVIRONMENT), where

    # No secret anywhere the program can read: its environment, docker-init's, nor any
    # process's environ or command line. Each worker value of some length counts as one too,
    # unless it is part of what the image or the sandbox sets (say SSL_CERT_DIR=/etc/ssl/certs
    # beside an image's PIP_CERT=/etc/ssl/certs/ca-certificates.crt).
    everything = result["stdout"]
    secrets = {TEST_JWT_SECRET, config.database_url, config.amqp_url}
    secrets |= {
        password
        for url in (config.database_url, config.amqp_url)
        if (password := urlsplit(url).password) and len(password) >= 8
    }
    set_here = [*image_environment.values(), *SANDBOX_ENVIRONMENT.values()]
    secrets |= {
        value
        for value in worker.values()
        if len(value) >= 8 and not any(value in known for known in set_here)
    }
    assert {secret for secret in secrets if secret in everything} == set()
    assert_next_task_runs_normally(user)


def test_no_docker_socket_and_no_worker_files(user):
    code = (
        "import os, stat\n"
        "sockets = []\n"
        "for top, dirs, files in os.walk('/'):\n"
        "    if top in ('/proc', '/sys'):\n"
        "        dirs[:] = []\n"
        "        continue\n"
        "    for name in files:\n"
        "        try:\n"
        "            if stat.S_ISSOCK(os.lstat(os.path.join(top, name)).st_mode):\n"
        "                sockets.append(os.path.join(top, name))\n"
        "        except OSError:\n"
        "            pass\n"
        "print(sockets)\n"
        "import json\n"
        "print(json.dumps([line.split()[4] for line in open('/proc/self/mountinfo')]))\n"
        f"print(os.path.exists({str(Path(__file__).resolve().parents[1])!r}))\n"
        "import importlib.util\n"
        "print(importlib.util.find_spec('taskservice'))\n"
    )
    result = run(user, code, timeout=10)
    assert result["status"] == "succeeded", result
    sockets, mounts, repository_visible, package = result["stdout"].splitlines()
    assert sockets == "[]"  # no docker.sock, nor any other socket to talk to
    # Docker's own mounts only: no bind mount of a worker or host directory.
    docker_files = {"/etc/resolv.conf", "/etc/hostname", "/etc/hosts", "/usr/sbin/docker-init"}
    for mount_point in json.loads(mounts):
        assert mount_point in {"/", "/tmp"} | docker_files or mount_point.startswith(
            ("/proc", "/sys", "/dev")
        ), mount_point
    assert (repository_visible, package) == ("False", "None")
    assert_next_task_runs_normally(user)


# --- network and user -----------------------------------------------------------------------


def test_only_the_loopback_interface_exists(user):
    # Checked from inside; nothing dials out.
    code = (
        "import os, socket\n"
        "print(sorted(os.listdir('/sys/class/net')))\n"
        "print(socket.if_nameindex())\n"
        "print(open('/proc/net/route').read().count('\\n'))\n"
        "print([line.split(':')[0].strip() for line in open('/proc/net/dev').readlines()[2:]])\n"
    )
    result = run(user, code)
    assert result["status"] == "succeeded", result
    assert result["stdout"].splitlines() == ["['lo']", "[(1, 'lo')]", "1", "['lo']"]
    assert_next_task_runs_normally(user)


def test_not_root_no_capabilities_no_new_privileges(user):
    code = (
        "import os\n"
        "print(open('/proc/self/status').read())\n"
        "try:\n"
        "    os.setuid(0)\n"
        "    print('became root')\n"
        "except PermissionError:\n"
        "    print('setuid refused')\n"
    )
    result = run(user, code)
    assert result["status"] == "succeeded", result
    fields = dict(line.split(":", 1) for line in result["stdout"].splitlines() if ":" in line)
    fields = {key: value.split() for key, value in fields.items()}
    assert fields["Uid"] == fields["Gid"] == ["65534"] * 4
    for capability_set in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert fields[capability_set] == ["0000000000000000"], capability_set
    assert fields["NoNewPrivs"] == ["1"]
    assert fields["Seccomp"] == ["2"]  # Docker's default seccomp filter
    assert result["stdout"].endswith("setuid refused\n")
    assert_next_task_runs_normally(user)


# --- after the suite ------------------------------------------------------------------------


def test_an_orphaned_sandbox_is_removed_by_the_worker(service, orphan, docker_client, config):
    # Planted before the worker started with a limit of 0 s: the janitor removes it once the
    # grace has passed since its start, at its next sweep (every 30 s). On a slow machine the
    # suite may reach this test after that: gone by then is fine, as long as not too early.
    started = parse_engine_time(orphan.attrs["State"]["StartedAt"])
    deadline = started + config.sandbox_orphan_grace_seconds + 45
    while True:
        try:
            docker_client.containers.get(service.orphan_id)
        except docker.errors.NotFound:
            assert time.time() >= started + config.sandbox_orphan_grace_seconds
            return
        assert time.time() < deadline, "the worker left an expired sandbox running"
        time.sleep(0.5)


def test_no_container_of_the_suite_is_left(service, docker_client, submitted_task_ids):
    # The tasks of this run, whichever tests were selected: the warm-up's three at least.
    assert len(submitted_task_ids) >= 3

    def left() -> list[str]:
        # Summaries, not containers.list: that inspects each, and fails on one removed meanwhile.
        sandboxes = docker_client.api.containers(
            all=True, filters={"label": f"{SERVICE_LABEL}={SERVICE_LABEL_VALUE}"}
        )
        # A cold container is labelled with its task; a pooled one is named after it.
        return [
            summary["Id"]
            for summary in sandboxes
            if (summary.get("Labels") or {}).get(TASK_LABEL) in submitted_task_ids
            or any(task_id in name for name in summary["Names"] for task_id in submitted_task_ids)
        ]

    # Removal happens in the background, right after each task: give the last one time.
    deadline = time.monotonic() + 60
    while left() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left() == []


def test_worker_memory_stayed_bounded(service, user):
    assert service.worker.alive(), service.worker.log()
    assert_next_task_runs_normally(user)
    growth = rss_bytes(service.worker.pid) - service.worker_rss_after_warm_up
    assert growth < WORKER_GROWTH_BOUND_BYTES, f"the worker grew by {growth / 2**20:.1f} MiB"
