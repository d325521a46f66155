"""How large a request body may be, and how much memory one is known to cost.

The largest bodies follow from the limits on what they carry; the config loader checks the body
memory budget against them (a budget that could never admit the largest body is refused), and
the resources refuse anything larger (body_limit.py).
"""

from __future__ import annotations

import math

from taskservice.task_files import MAX_NAME_BYTES

MIB = 2**20
# The memory a body costs its API process at its peak, per byte of Content-Length: the chunks
# read and their join, the decoded text and its parsed strings, files decoded from base64, and
# the database's parameters. Measured with tracemalloc through the real app (bench/body_memory.py):
# 3.0 for a task with stdin and base64 files, 2.2 for files of \u escapes, 3.3 for a Judge0
# submission of base64 texts; rounded up for the allocator's own overhead.
BYTES_PER_BODY_BYTE = 4
# Bodies up to this size are not counted: the default body limit (body_limit.py), every route
# but the submissions. Their cost is bounded by the threads (API_THREADS) times this.
SMALL_BODY_BYTES = 64 * 1024

# What one entry of POST /task's `files` may take beside its content: its name (6 bytes per
# byte, escaped), the keys, the encoding and the punctuation.
FILE_ENTRY_BYTES = 6 * MAX_NAME_BYTES + 64


def task_body_bytes(
    max_code_bytes: int, max_stdin_bytes: int, max_files: int, max_files_bytes: int
) -> int:
    """The largest JSON body a valid task can need: escapes such as \\u0000 take 6 bytes for
    each byte of code, stdin or a file's content (base64 takes 4 for 3)."""
    content = max_code_bytes + max_stdin_bytes + max_files_bytes
    return 6 * content + max_files * FILE_ENTRY_BYTES + 4096


def judge0_body_bytes(
    max_code_bytes: int,
    max_stdin_bytes: int,
    max_output_bytes: int,
    max_files: int,
    max_files_bytes: int,
) -> int:
    """Base64 and JSON escapes make a body up to 6 bytes per byte of its texts; the zip of
    additional_files stores its files' bytes at worst, with a header per file."""
    texts = max_code_bytes + max_stdin_bytes + max_output_bytes
    zipped = max_files_bytes + max_files * 1024
    return 6 * (texts + zipped) + 8192


def reserved_bytes(content_length: int) -> int:
    """What a body of ``content_length`` bytes takes from the budget (body_budget.py)."""
    return content_length * BYTES_PER_BODY_BYTE


def smallest_budget_mb(
    max_code_bytes: int,
    max_stdin_bytes: int,
    max_output_bytes: int,
    max_files: int,
    max_files_bytes: int,
) -> int:
    """The budget, in MiB, that the largest body any route accepts needs on its own."""
    largest = max(
        task_body_bytes(max_code_bytes, max_stdin_bytes, max_files, max_files_bytes),
        judge0_body_bytes(
            max_code_bytes, max_stdin_bytes, max_output_bytes, max_files, max_files_bytes
        ),
    )
    return math.ceil(reserved_bytes(largest) / MIB)
