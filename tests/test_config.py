"""Configuration: the JWT secret checks, and the deployment files that must list every setting."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from taskservice.config import (
    JWT_SECRET_PLACEHOLDER,
    WORKER_STOP_SLACK_SECONDS,
    Config,
    ConfigError,
)
from taskservice.config_loader import load_config

ROOT = Path(__file__).resolve().parents[1]
GOOD_SECRET = "0123456789abcdef0123456789abcdef"


class RecordingEnv(dict):
    """An environment that remembers every variable name it was asked for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.asked.add(key)
        return super().__contains__(key)


def variables_read() -> set[str]:
    env = RecordingEnv()
    load_config(env)
    return env.asked


def test_api_refuses_the_placeholder_secret():
    config = load_config({"JWT_SECRET": JWT_SECRET_PLACEHOLDER})
    with pytest.raises(ConfigError, match="placeholder"):
        config.check_api()


def test_api_refuses_a_short_secret():
    config = load_config({"JWT_SECRET": GOOD_SECRET[:-1]})
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        config.check_api()


def test_api_accepts_a_real_secret():
    load_config({"JWT_SECRET": GOOD_SECRET}).check_api()


# Every float setting, by the variable that sets it (the field's name in capitals).
FLOAT_SETTINGS = (
    "TASK_CPUS",
    "WORKER_HEARTBEAT_SECONDS",
    "WORKER_LEASE_SECONDS",
    "SWEEP_INTERVAL_SECONDS",
    "QUEUED_RESEND_SECONDS",
    "BROKER_TIMEOUT_SECONDS",
    "MAX_WAIT_SECONDS",
    "WEBHOOK_TIMEOUT_SECONDS",
    "WEBHOOK_RETRY_SECONDS",
    "BODY_BUDGET_WAIT_SECONDS",
)


def test_float_settings_lists_every_float_field():
    # A new float setting must join the non-finite test below.
    floats = {f.name.upper() for f in fields(Config) if f.type == "float"}
    assert floats == set(FLOAT_SETTINGS)


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", " -Infinity "])
@pytest.mark.parametrize("name", FLOAT_SETTINGS)
def test_a_float_setting_refuses_non_finite_values(name, value):
    with pytest.raises(ConfigError, match=rf"^{name}=") as refused:
        load_config({name: value})
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("name", FLOAT_SETTINGS)
def test_a_float_setting_accepts_a_finite_value(name):
    # The default itself, written out: the refusal above is of the value, not of the variable.
    default = getattr(Config(), name.lower())
    assert getattr(load_config({name: f" {default!r} "}), name.lower()) == default


def test_worker_refuses_a_stop_grace_too_short_for_the_longest_task():
    env = {"TASK_TIMEOUT_MAX": "300", "WORKER_STOP_GRACE_SECONDS": "80"}
    with pytest.raises(ConfigError, match=r"^WORKER_STOP_GRACE_SECONDS=80 .*TASK_TIMEOUT_MAX"):
        load_config(env)
    assert load_config({**env, "WORKER_STOP_GRACE_SECONDS": "320"}).task_timeout_max == 300


def test_no_stop_grace_means_no_bound():
    # Outside Compose (`make run`, a plain process) nothing kills the worker on a clock.
    assert load_config({"TASK_TIMEOUT_MAX": "3600"}).worker_stop_grace_seconds is None


def compose_default(value: str) -> str:
    """The default in a Compose value of the form ${NAME:-default}."""
    interpolated = re.fullmatch(r"\$\{([A-Z0-9_]+):-([^}]*)\}", str(value))
    assert interpolated, f"not ${{NAME:-default}}: {value!r}"
    return interpolated.group(2)


def test_compose_stop_grace_is_the_one_the_worker_checks():
    # Compose kills the worker stop_grace_period after its SIGTERM; the worker, told the same
    # value, refuses to start when that would cut its longest task short.
    worker = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["worker"]
    told = worker["environment"]["WORKER_STOP_GRACE_SECONDS"]
    assert worker["stop_grace_period"] == f"{told}s"
    default = compose_default(told)
    config = load_config({"WORKER_STOP_GRACE_SECONDS": default})
    assert config.worker_stop_grace_seconds >= config.task_timeout_max + WORKER_STOP_SLACK_SECONDS


def test_env_example_ships_the_placeholder_the_api_refuses():
    text = (ROOT / ".env.example").read_text()
    assert re.search(rf"^JWT_SECRET={re.escape(JWT_SECRET_PLACEHOLDER)}$", text, re.MULTILINE)


def test_env_example_lists_every_variable_the_service_reads():
    listed = set(re.findall(r"\b[A-Z][A-Z0-9_]+\b", (ROOT / ".env.example").read_text()))
    missing = variables_read() - listed
    assert not missing, f"add to .env.example: {sorted(missing)}"


# Defaults .env.example states in words, for settings whose default is "none": the empty string.
WORDED_DEFAULTS = {
    "SANDBOX_RUNTIME": "engine default",
    "PROMETHEUS_MULTIPROC_DIR": "a fresh temporary directory",
    "CORS_ORIGINS": "none",
    "WEBHOOK_ALLOWED_HOSTS": "none",
}


def env_example_defaults() -> dict[str, str]:
    """The default .env.example states for each variable: "[a, b]" in the comment above a run
    of variables gives theirs in order; "# A, B   text [a, b]" does so for variables it only
    lists (names, then two spaces or more).
    """
    settings = {f.name.upper() for f in fields(Config)}
    stated: dict[str, str] = {}
    comment: list[str] = []
    names: list[str] = []

    def close_block():
        brackets = re.findall(r"\[([^\]]*)\]", " ".join(comment))
        # Compose's own variables (NGINX_*, ...) may word theirs as they like.
        if brackets and settings & set(names):
            values = brackets[-1].split(", ")
            assert len(values) == len(names), f"{names}: {len(values)} defaults in [{brackets[-1]}]"
            stated.update(zip(names, values, strict=True))

    for line in (ROOT / ".env.example").read_text().splitlines():
        listed = re.match(r"# ([A-Z][A-Z0-9_]*(?:, [A-Z][A-Z0-9_]*)*) {2,}[^\[]*\[([^\]]*)\]", line)
        if listed:
            listed_names, values = listed.group(1).split(", "), listed.group(2).split(", ")
            stated.update(zip(listed_names, values, strict=True))
        if re.match(r"[A-Z][A-Z0-9_]*=", line):
            names.append(line.split("=", 1)[0])
            continue
        if names:
            close_block()
            comment, names = [], []
        if line.startswith("#"):
            comment.append(line)
        elif not line.strip():
            comment = []
    close_block()
    return stated


def test_env_example_states_the_default_of_every_setting_but_the_secret():
    unstated = variables_read() - set(env_example_defaults()) - {"JWT_SECRET"}
    assert not unstated, f"state the default in .env.example: {sorted(unstated)}"


def compose_set_defaults() -> dict[str, str]:
    """Settings docker-compose.yml gives a default of its own, where .env.example leaves them
    empty: ${NAME:-default} with a non-empty default.
    """
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    found = {}
    for service in ("api", "worker"):
        for name, value in compose["services"][service]["environment"].items():
            if re.fullmatch(r"\$\{[A-Z0-9_]+:-[^}]+\}", str(value)):
                found[name] = compose_default(value)
    return found


def test_env_example_states_the_defaults_the_code_has():
    # .env.example is Compose's: where Compose sets a default, that is the one it states.
    defaults = {**vars(Config()), **{k.lower(): v for k, v in compose_set_defaults().items()}}
    wrong = {}
    for name, stated in env_example_defaults().items():
        if name.lower() not in defaults:
            continue  # Compose's own settings (NGINX_PORT, ...)
        default = defaults[name.lower()]
        if isinstance(default, bool) or not isinstance(default, (int, float, str)):
            raise AssertionError(f"{name}: no rule to compare a {type(default).__name__}")
        if isinstance(default, str):
            matches = stated == (WORDED_DEFAULTS.get(name, default) if default == "" else default)
        else:
            try:
                matches = float(stated) == default
            except ValueError:
                matches = False
        if not matches:
            wrong[name] = (stated, default)
    assert not wrong, f".env.example states (stated, code's default): {wrong}"


def test_compose_passes_every_variable_to_the_service():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    passed = set()
    for service in ("api", "worker"):
        passed |= set(compose["services"][service]["environment"])
    missing = variables_read() - passed
    assert not missing, f"pass through in docker-compose.yml's x-app-environment: {sorted(missing)}"


# --- Retention and bounds ---


def test_retention_and_bounds_have_their_defaults_and_refuse_zero():
    config = load_config({})
    assert (config.result_retention_days, config.dead_letter_max_length) == (7, 10_000)
    assert config.prune_batch_size == 500
    assert load_config({"RESULT_RETENTION_DAYS": "1"}).result_retention_days == 1
    for name in ("RESULT_RETENTION_DAYS", "DEAD_LETTER_MAX_LENGTH", "PRUNE_BATCH_SIZE"):
        with pytest.raises(ConfigError, match=rf"^{name}=0 must be between 1 and"):
            load_config({name: "0"})


# --- Memory for request bodies ---


def test_the_body_budget_must_hold_the_largest_body():
    config = load_config({})
    assert (config.body_memory_budget_mb, config.body_budget_wait_seconds) == (256, 3.0)
    # The defaults admit a Judge0 body of 60.5 MiB: 4 bytes per byte is 242 MiB.
    with pytest.raises(ConfigError, match=r"^BODY_MEMORY_BUDGET_MB=241 is less than the 242 MiB"):
        load_config({"BODY_MEMORY_BUDGET_MB": "241"})
    assert load_config({"BODY_MEMORY_BUDGET_MB": "242"}).body_memory_budget_mb == 242
    # Smaller limits, a smaller budget.
    small = {"MAX_FILES_BYTES": "0", "MAX_STDIN_BYTES": "0", "MAX_OUTPUT_BYTES": "1024"}
    assert load_config({**small, "BODY_MEMORY_BUDGET_MB": "16"}).body_memory_budget_mb == 16
    # Unset, it grows with the limits: raising one never stops a process from starting.
    more = {"MAX_FILES_BYTES": str(9 * 2**20)}
    assert load_config(more).body_memory_budget_mb > 256
    with pytest.raises(ConfigError, match=r"^BODY_MEMORY_BUDGET_MB=256 is less than the \d+ MiB"):
        load_config({**more, "BODY_MEMORY_BUDGET_MB": "256"})
    with pytest.raises(ConfigError, match=r"^BODY_BUDGET_WAIT_SECONDS=31.0 must be between"):
        load_config({"BODY_BUDGET_WAIT_SECONDS": "31"})


# --- Languages: the python-data runtime and per-language defaults ---


def test_python_data_runs_in_the_data_image_with_its_own_memory_default():
    config = load_config({"SANDBOX_DATA_IMAGE": "registry.example/data:7", "TASK_MEMORY_MB": "200"})
    data, python = config.languages["python-data"], config.languages["python"]
    assert (data.image, data.command, data.filename) == (
        "registry.example/data:7",
        ("python3", "-u"),
        "main.py",
    )
    assert data.default_memory_mb(config.task_memory_mb) == 512
    # The others keep TASK_MEMORY_MB.
    assert python.default_memory_mb(config.task_memory_mb) == 200
    assert config.languages["bash"].default_memory_mb(config.task_memory_mb) == 200
    assert ("MPLBACKEND", "Agg") in data.environment and python.environment == ()
    assert load_config({}).sandbox_data_image == "taskservice/sandbox-python-data:3"


def test_a_language_default_memory_never_passes_the_maximum():
    config = load_config({"TASK_MEMORY_MAX_MB": "300", "TASK_MEMORY_MB": "100"})
    assert config.languages["python-data"].default_memory_mb(config.task_memory_mb) == 300
    # Nor less than the others' default.
    config = load_config({"TASK_MEMORY_MB": "700"})
    assert config.languages["python-data"].default_memory_mb(config.task_memory_mb) == 700


# --- Several hosts: the queues' type and several broker addresses ---


def test_queue_type_is_quorum_by_default_and_classic_on_request():
    assert load_config({}).queue_type == "quorum"
    assert load_config({"QUEUE_TYPE": " Classic "}).queue_type == "classic"
    with pytest.raises(ConfigError, match=r"^QUEUE_TYPE='stream' must be classic or quorum"):
        load_config({"QUEUE_TYPE": "stream"})


def test_amqp_url_may_list_the_nodes_of_a_cluster():
    nodes = "amqp://u:p@rabbit-1:5672/%2F, amqp://u:p@rabbit-2/%2F,amqps://u:p@rabbit-3:5671/%2F"
    assert load_config({"AMQP_URL": nodes}).amqp_url == nodes


@pytest.mark.parametrize(
    ("listed", "refusal"),
    [
        ("amqp://u:secret@a/%2F,,amqp://u:secret@b/%2F", "must start with amqp:// or amqps://"),
        ("amqp://u:secret@a/%2F,http://b/", "must start with amqp:// or amqps://"),
        ("amqp://u:secret@a/%2F,amqp://u:secret@/%2F", "address 2 names no host"),
        ("amqp://u:secret@a:99999/%2F", "address 1 has an invalid port"),
        ("amqp://u:secret@a:56x2/%2F,amqp://u:secret@b/%2F", "address 1 has an invalid port"),
        ("amqp://u:secret@a/%2F,amqp://u:secret@a/%2F", "lists the same address twice"),
    ],
)
def test_each_broker_address_is_checked_without_showing_its_password(listed, refusal):
    with pytest.raises(ConfigError, match=refusal) as refused:
        load_config({"AMQP_URL": listed})
    assert "secret" not in str(refused.value)
