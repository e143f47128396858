"""Timing helpers shared by the ppokit benchmarks.

Every benchmark compares several candidates on the same machine in the same process. To keep
the comparison fair on a shared, noisy box the candidates are *interleaved*: each round times
every candidate once (in a rotating order), and the reported figure is the median over rounds.
A burst of load from another process then hits all candidates alike instead of one of them.

On a machine shared with other jobs, ``clock="cpu"`` times the CPU time of the calling thread
(``time.thread_time``) rather than wall-clock time: time spent descheduled while another
process runs is then not counted. It is the right clock for single-threaded work (torch with
one thread does all its work on the calling thread); cache pollution by the neighbours still
shows, which is why the rounds are interleaved anyway.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch

CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}

__all__ = [
    "CLOCKS",
    "calls_per_round",
    "fmt_time",
    "interleaved",
    "machine_line",
    "paired_ratio",
    "print_table",
]


def machine_line() -> str:
    """One line naming the CPU, core count, Python, torch and the thread setting."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s)"
    )


def calls_per_round(
    fn: Callable[[], object], *, target_s: float = 0.05, max_calls: int = 10_000
) -> int:
    """How many calls of ``fn`` fill about ``target_s`` seconds (after one warm-up call)."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    return int(min(max_calls, max(1, target_s / once)))


def interleaved(
    candidates: Mapping[str, Callable[[], object]],
    *,
    rounds: int = 15,
    calls: int | Mapping[str, int] | None = None,
    warmup: int = 3,
    target_s: float = 0.05,
    clock: str = "wall",
    stat: str = "median",
) -> dict[str, float]:
    """Median seconds per call of each candidate over interleaved rounds.

    Args:
        candidates: name -> zero-argument callable doing one unit of work.
        rounds: number of rounds; each round times every candidate once.
        calls: calls per timing (one int for all, a dict per name, or None to size each
            candidate's timing to about ``target_s`` seconds).
        warmup: untimed calls of each candidate before the first round.
        target_s: the timing length used when ``calls`` is None.
        clock: ``"wall"`` (``time.perf_counter``) or ``"cpu"`` (``time.thread_time``, the
            calling thread's CPU time).
        stat: ``"median"`` or ``"min"`` over rounds, or ``"both"`` (then the result maps
            name -> median and ``name + " (min)"`` -> minimum). Noise from other processes
            only ever adds time, so the minimum is the steadier figure on a loaded machine.
            ``"samples"``: name -> the list of per-round times (for paired ratios, see
            :func:`paired_ratio`).

    Returns:
        name -> median seconds per call (or as ``stat`` says).
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}.")
    now = CLOCKS[clock]
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    if calls is None:
        n_calls = {n: calls_per_round(candidates[n], target_s=target_s) for n in names}
    elif isinstance(calls, int):
        n_calls = dict.fromkeys(names, calls)
    else:
        n_calls = dict(calls)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate who goes first
        for name in order:
            fn, k = candidates[name], n_calls[name]
            start = now()
            for _ in range(k):
                fn()
            samples[name].append((now() - start) / k)
    if stat == "samples":
        return samples
    result = {}
    for n, v in samples.items():
        if stat in ("median", "both"):
            result[n] = statistics.median(v)
        if stat == "min":
            result[n] = min(v)
        if stat == "both":
            result[n + " (min)"] = min(v)
    return result


def paired_ratio(
    samples: Mapping[str, Sequence[float]], name: str, baseline: str
) -> tuple[float, float, float]:
    """Median and quartiles of ``name``'s time over ``baseline``'s time in the same round.

    Both were timed within a fraction of a second of each other, so a slow phase of a noisy
    machine scales both and cancels in their ratio; the ratio of two medians taken over
    different rounds does not cancel it. Returns ``(q25, median, q75)``.

    Example:
        >>> paired_ratio({"a": [2.0, 4.0, 6.0], "b": [1.0, 2.0, 3.0]}, "a", "b")
        (2.0, 2.0, 2.0)
    """
    ratios = [x / y for x, y in zip(samples[name], samples[baseline], strict=True)]
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    q25, q50, q75 = statistics.quantiles(ratios, n=4, method="inclusive")
    return q25, q50, q75


def fmt_time(seconds: float) -> str:
    """``1.23 ms`` / ``456 us`` style."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} us"


def print_table(
    title: str,
    rows: Sequence[tuple[str, Mapping[str, float]]],
    *,
    baseline: str,
    columns: Sequence[str] | None = None,
) -> None:
    """Print median times per row and each column's ratio to ``baseline`` as a markdown table.

    Args:
        title: printed above the table.
        rows: (row label, name -> seconds per call).
        baseline: the column the ratios divide by.
        columns: column order (default: the first row's keys).
    """
    columns = list(columns or rows[0][1])
    others = [c for c in columns if c != baseline]
    head = ["setup", *columns, *[f"{c} / {baseline}" for c in others]]
    print(f"\n{title}")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for label, times in rows:
        cells = [label]
        cells += [fmt_time(times[c]) if c in times else "n/a" for c in columns]
        cells += [f"{times[c] / times[baseline]:.2f}" if c in times else "n/a" for c in others]
        print("| " + " | ".join(cells) + " |")
