"""The language table: how each language runs, with its image and defaults from the Config."""

from __future__ import annotations

from taskservice.config import Config, Language

# Libraries write their caches under $HOME or next to themselves; the root filesystem is read-only
# and only /tmp (the sandbox's own tmpfs, hence S108's noqa) is writable. One BLAS thread: a task
# has one CPU's worth, and OpenBLAS would otherwise start a thread per host core against the
# task's process limit.
DATA_ENVIRONMENT = (
    ("MPLBACKEND", "Agg"),  # no display: plots are saved to files
    ("MPLCONFIGDIR", "/tmp/.config/matplotlib"),  # noqa: S108
    ("XDG_CACHE_HOME", "/tmp/.cache"),  # noqa: S108 (fontconfig's cache)
    ("OPENBLAS_NUM_THREADS", "1"),
    ("OMP_NUM_THREADS", "1"),
)
# numpy, pandas, scipy and matplotlib imported and a small plot saved peak at ~70 MB (measured
# in the sandbox): 512 leaves the data most of it. Never less than TASK_MEMORY_MB, never more than
# TASK_MEMORY_MAX_MB.
DATA_MEMORY_MB = 512
DATA_VERSION_CODE = """\
import platform, matplotlib, numpy, pandas, scipy
print(f"{platform.python_version()} (numpy {numpy.__version__}, pandas {pandas.__version__},"
      f" matplotlib {matplotlib.__version__}, scipy {scipy.__version__})")
"""


def default_languages(
    sandbox_image: str,
    data_image: str = Config.sandbox_data_image,
    memory_mb: int = Config.task_memory_mb,
    memory_max_mb: int = Config.task_memory_max_mb,
) -> dict[str, Language]:
    """The language table. Adding a language is one entry here plus an image that has it."""
    return {
        "python": Language(
            name="python",
            image=sandbox_image,
            command=("python3", "-u"),
            filename="main.py",
            version_code="import platform; print(platform.python_version())",
        ),
        "bash": Language(
            name="bash",
            image=sandbox_image,
            command=("bash",),
            filename="main.sh",
            version_code='echo "${BASH_VERSION%%(*}"',
        ),
        "python-data": Language(
            name="python-data",
            image=data_image,
            command=("python3", "-u"),
            filename="main.py",
            version_code=DATA_VERSION_CODE,
            memory_mb=min(max(DATA_MEMORY_MB, memory_mb), memory_max_mb),
            environment=DATA_ENVIRONMENT,
        ),
    }
