"""W1 on OpenStack TaskFlow with its SQLite persistence backend.

Flows of STEPS trivial tasks (x -> x + 1), run one after another with the serial engine;
every state change is persisted by TaskFlow before the next one. Prints one Markdown table
row in the same shape as `flowstate-bench w1-taskgraph`.

Usage: python taskflow_w1.py DB_PATH FLOWS STEPS
"""

import contextlib
import statistics
import sys
import time
import uuid

from taskflow import engines, task
from taskflow.patterns import linear_flow
from taskflow.persistence import backends, models


class Inc(task.Task):
    def execute(self, x):
        return x + 1


def make_flow(steps):
    flow = linear_flow.Flow("w1")
    for i in range(steps):
        source = "x" if i == 0 else "x%d" % (i - 1)
        flow.add(Inc(name="step%d" % i, provides="x%d" % i, rebind={"x": source}))
    return flow


def main():
    path, flows, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    backend = backends.fetch({"connection": "sqlite:///" + path})
    with contextlib.closing(backend.get_connection()) as conn:
        conn.upgrade()
    latencies = []
    start = time.perf_counter()
    for _ in range(flows):
        began = time.perf_counter()
        book = models.LogBook("w1")
        detail = models.FlowDetail("w1", uuid=str(uuid.uuid4()))
        book.add(detail)
        with contextlib.closing(backend.get_connection()) as conn:
            conn.save_logbook(book)
        engine = engines.load(make_flow(steps), flow_detail=detail, book=book,
                              backend=backend, store={"x": 0}, engine="serial")
        engine.run()
        result = engine.storage.fetch("x%d" % (steps - 1))
        assert result == steps, result
        latencies.append((time.perf_counter() - began) * 1000)
    elapsed = time.perf_counter() - start
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print("| TaskFlow %s, SQLite backend, sequential, %d flows | %d | %d | %.2f | %.0f | %.2f | %.2f |" % (
        __import__("taskflow.version", fromlist=["version_string"]).version_string(),
        flows, flows, flows * steps, elapsed, flows * steps / elapsed,
        statistics.median(latencies), p99))


if __name__ == "__main__":
    main()
