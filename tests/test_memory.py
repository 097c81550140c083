"""The run command's memory settings: Arrow on the system allocator, few glibc arenas."""
from __future__ import annotations

import subprocess
import sys


def test_economise_memory_puts_arrow_on_the_system_allocator() -> None:
    # In a child process: the setting is process-wide and must not leak into other tests.
    script = ("import pyarrow as pa\n"
              "from crawler.store.memory import economise_memory\n"
              "economise_memory()\n"
              "print(pa.default_memory_pool().backend_name)\n")
    answer = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == "system"


def test_economise_memory_is_harmless_without_glibc_mallopt() -> None:
    from crawler.store import memory

    memory._limit_malloc_arenas(memory.ARENAS)  # glibc here; elsewhere it must return quietly, never raise
