"""W1 on DBOS Transact (Python) with its PostgreSQL system database.

A workflow of STEPS trivial steps (x -> x + 1, each reading the previous step's result); DBOS
checkpoints every step's output in PostgreSQL before the next step runs (its default).
Sequential: FLOWS workflows one after another, each called and awaited. Concurrent (when
CONCURRENT > 0): CONCURRENT workflows started at once with DBOS.start_workflow, then all
awaited; a workflow's latency runs from its start to its result. One untimed warm-up workflow
runs first. Prints one Markdown table row per mode, in the same shape as the other W1 rows.

Usage: python dbos_w1.py DATABASE_URL FLOWS STEPS CONCURRENT
"""

import importlib.metadata
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from dbos import DBOS

url, FLOWS, STEPS, CONCURRENT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
VERSION = importlib.metadata.version("dbos")


@DBOS.step()
def inc(x):
    return x + 1


@DBOS.workflow()
def w1(x):
    for _ in range(STEPS):
        x = inc(x)
    return x


def row(scenario, flows, elapsed, latencies):
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print("| DBOS %s, PostgreSQL | %s | %d | %d | %.2f | %.0f | %.2f | %.2f |" % (
        VERSION, scenario, flows, flows * STEPS, elapsed, flows * STEPS / elapsed,
        statistics.median(latencies), p99), flush=True)


def sequential():
    latencies = []
    start = time.perf_counter()
    for _ in range(FLOWS):
        began = time.perf_counter()
        assert w1(0) == STEPS
        latencies.append((time.perf_counter() - began) * 1000)
    row("sequential", FLOWS, time.perf_counter() - start, latencies)


def concurrent():
    start = time.perf_counter()
    started = [(time.perf_counter(), DBOS.start_workflow(w1, 0)) for _ in range(CONCURRENT)]

    def wait(entry):  # one waiter per workflow, so each latency ends when its result arrives
        began, handle = entry
        assert handle.get_result() == STEPS
        return (time.perf_counter() - began) * 1000

    with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
        latencies = list(pool.map(wait, started))
    row("%d concurrent" % CONCURRENT, CONCURRENT, time.perf_counter() - start, latencies)


def main():
    DBOS(config={"name": "dbos_w1_bench", "system_database_url": url, "log_level": "WARNING"})
    DBOS.launch()
    try:
        assert w1(0) == STEPS  # warm-up: connections, caches
        sequential()
        if CONCURRENT > 0:
            concurrent()
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    main()
