"""Judge0's fixed tables, with this service's real values: version, statuses, languages and
the configuration a client reads to learn the limits."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from taskservice.config import Config, Language

# The SDK maps language names to ids by this version (71 is Python 3, 46 is Bash in 1.13.1).
JUDGE0_VERSION = "1.13.1"
MAX_BATCH_SIZE = 20
# Judge0's own bounds on a few strings.
MAX_ARGUMENTS_CHARS = 512


class Judge0Status(enum.IntEnum):
    IN_QUEUE = 1
    PROCESSING = 2
    ACCEPTED = 3
    WRONG_ANSWER = 4
    TIME_LIMIT_EXCEEDED = 5
    COMPILATION_ERROR = 6
    RUNTIME_ERROR_SIGSEGV = 7
    RUNTIME_ERROR_SIGXFSZ = 8
    RUNTIME_ERROR_SIGFPE = 9
    RUNTIME_ERROR_SIGABRT = 10
    RUNTIME_ERROR_NZEC = 11
    RUNTIME_ERROR_OTHER = 12
    INTERNAL_ERROR = 13
    EXEC_FORMAT_ERROR = 14


DESCRIPTIONS = {
    Judge0Status.IN_QUEUE: "In Queue",
    Judge0Status.PROCESSING: "Processing",
    Judge0Status.ACCEPTED: "Accepted",
    Judge0Status.WRONG_ANSWER: "Wrong Answer",
    Judge0Status.TIME_LIMIT_EXCEEDED: "Time Limit Exceeded",
    Judge0Status.COMPILATION_ERROR: "Compilation Error",
    Judge0Status.RUNTIME_ERROR_SIGSEGV: "Runtime Error (SIGSEGV)",
    Judge0Status.RUNTIME_ERROR_SIGXFSZ: "Runtime Error (SIGXFSZ)",
    Judge0Status.RUNTIME_ERROR_SIGFPE: "Runtime Error (SIGFPE)",
    Judge0Status.RUNTIME_ERROR_SIGABRT: "Runtime Error (SIGABRT)",
    Judge0Status.RUNTIME_ERROR_NZEC: "Runtime Error (NZEC)",
    Judge0Status.RUNTIME_ERROR_OTHER: "Runtime Error (Other)",
    Judge0Status.INTERNAL_ERROR: "Internal Error",
    Judge0Status.EXEC_FORMAT_ERROR: "Exec Format Error",
}


def status_body(status: Judge0Status) -> dict:
    return {"id": int(status), "description": DESCRIPTIONS[status]}


# Judge0 id -> our language. 71 is Judge0 1.13's Python 3, 100 the newer releases' one: both
# run the one Python the sandbox image has. python-data has none: Judge0 CE has no data-science
# Python, and the "Python for ML" of Judge0's extra edition is numbered in that edition's own
# list, whose ids mean other languages here. A python-data task read through /judge0 shows id 0.
LANGUAGE_IDS = {46: "bash", 71: "python", 100: "python"}
# The id a task made through our own API shows when read through /judge0.
DEFAULT_IDS = {"bash": 46, "python": 71}
_DISPLAY_NAMES = {"bash": "Bash", "python": "Python"}


@dataclass(frozen=True)
class Judge0Language:
    id: int
    language: Language

    def name(self, versions: dict[str, str]) -> str:
        display = _DISPLAY_NAMES.get(self.language.name, self.language.name.title())
        version = versions.get(self.language.name)
        # The version the workers found in the image; none until a worker has started.
        return f"{display} ({version})" if version else display

    def detail(self, versions: dict[str, str]) -> dict:
        return {
            "id": self.id,
            "name": self.name(versions),
            "is_archived": False,
            "source_file": self.language.filename,
            "compile_cmd": None,
            "run_cmd": " ".join((*self.language.command, self.language.filename)),
        }


def languages(config: Config) -> dict[int, Judge0Language]:
    """The Judge0 languages this service runs, by id."""
    return {
        language_id: Judge0Language(language_id, config.languages[name])
        for language_id, name in sorted(LANGUAGE_IDS.items())
        if name in config.languages
    }


def config_info(config: Config) -> dict:
    """GET /config_info: every field Judge0 documents, with the limits that really apply.

    The sandbox limits wall-clock time only, so the CPU and wall time limits are the same
    numbers; what the sandbox fixes for every task (processes, file size) is both the default
    and the maximum; what it does not do at all is off.
    """
    tmp_kb = config.task_tmp_mb * 1024
    return {
        "maintenance_mode": False,
        "enable_wait_result": config.max_wait_seconds > 0,
        "enable_compiler_options": False,
        "allowed_languages_for_compile_options": [],
        "enable_command_line_arguments": True,
        "enable_submission_delete": False,
        "enable_callbacks": True,
        "callbacks_max_tries": 0,
        "callbacks_timeout": 0.0,
        "enable_additional_files": config.max_files > 0,
        "max_queue_size": config.user_max_active_tasks,
        "cpu_time_limit": float(config.task_timeout_default),
        "max_cpu_time_limit": float(config.task_timeout_max),
        "cpu_extra_time": 0.0,
        "max_cpu_extra_time": 0.0,
        "wall_time_limit": float(config.task_timeout_default),
        "max_wall_time_limit": float(config.task_timeout_max),
        "memory_limit": config.task_memory_mb * 1024,
        "max_memory_limit": config.task_memory_max_mb * 1024,
        # No stack limit of its own: a program's stack counts against its memory.
        "stack_limit": config.task_memory_mb * 1024,
        "max_stack_limit": config.task_memory_max_mb * 1024,
        "max_processes_and_or_threads": config.task_pids,
        "max_max_processes_and_or_threads": config.task_pids,
        "enable_per_process_and_thread_time_limit": False,
        "allow_enable_per_process_and_thread_time_limit": False,
        "enable_per_process_and_thread_memory_limit": False,
        "allow_enable_per_process_and_thread_memory_limit": False,
        "max_file_size": tmp_kb,
        "max_max_file_size": tmp_kb,
        "number_of_runs": 1,
        "max_number_of_runs": 1,
        "redirect_stderr_to_stdout": False,
        "max_extract_size": 0,
        "enable_batched_submissions": True,
        "max_submission_batch_size": MAX_BATCH_SIZE,
        "submission_cache_duration": 0.0,
        "use_docs_as_homepage": False,
        "allow_enable_network": False,
        "enable_network": False,
    }


def about() -> dict:
    return {
        "version": JUDGE0_VERSION,
        "homepage": "https://judge0.com",
        "source_code": "https://github.com/judge0/judge0",
        "maintainer": "Task Service, a Judge0-compatible API",
    }
