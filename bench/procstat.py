"""CPU time and resident memory of a process tree, read from Linux ``/proc``.

A server started with ``--workers 2`` is a supervisor plus worker processes, so both figures are
summed over the process and all its descendants, found by scanning ``/proc/*/stat`` for parents.
Processes that exit between two samples take their CPU time with them; benchmark servers keep
their workers for the whole run, so this does not matter here.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (which may contain spaces), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` and its live descendants."""
    total = 0
    for p in tree(pid):
        if (fields := _stat_fields(p)) is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its live descendants."""
    total = 0
    for p in tree(pid):
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * _PAGE
        except OSError:
            continue
    return total


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine so far (all cores; idle and iowait excluded)."""
    user, nice, system, _idle, _iowait, irq, softirq = _machine_ticks()[:7]
    return (user + nice + system + irq + softirq) / _TICKS


def stolen_cpu_seconds() -> float:
    """CPU seconds the hypervisor ran other guests while this VM wanted to run (``steal``; 0 on bare metal)."""
    return _machine_ticks()[7] / _TICKS


def _machine_ticks() -> list[int]:
    """The ``cpu`` line of ``/proc/stat``: user nice system idle iowait irq softirq steal ..."""
    with open("/proc/stat") as stat:
        return [int(v) for v in stat.readline().split()[1:]]
