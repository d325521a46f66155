"""Fewer malloc arenas in an API process, so that its memory follows what is in use.

glibc gives threads that contend for malloc arenas of their own, up to eight per core, and keeps
what a thread freed in its arena for that arena's next use. An API process answers requests on
up to API_THREADS threads: after large bodies handled by many of them in turn, the process held
the sum of their arenas' high-water marks, not what was in use at any moment. With the body
budget letting one 12 MiB body in at a time (64 MiB), twelve clients sending 36 bodies grew the
process by 239 MiB with glibc's arenas, by 52 MiB with two (bench/body_budget.py; both with
the trim after each large body, body_budget_middleware.py, without which two grew it by 96).
Python's small objects never touch malloc (its own allocator), and the GIL already serialises
most of what does, so a couple of arenas cost little contention.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# glibc's mallopt parameter (malloc.h).
M_ARENA_MAX = -8
API_ARENAS = 2


def limit_malloc_arenas(arenas: int = API_ARENAS) -> bool:
    """Whether the limit was set: False where the C library is not glibc (musl has no
    per-thread arenas to limit). Called before the process's request threads start."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(M_ARENA_MAX, arenas) == 1
