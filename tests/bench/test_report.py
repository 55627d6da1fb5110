"""
The benchmark report's client CPU column: the median of the runs' CPU per
unit, shown for the ORM, SQL and SELECT 1 workloads, marked as the
parent's share where the work runs in other processes, and left out where
a run did not record it (pgbench, older results).
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from bench.report import workloadTable
from bench.stats import summarise, summariseVariant


def run(rate: float, cpu: float | None) -> dict[str, Any]:
    record: dict[str, Any] = {"rate": rate, "seconds": 1.0, "count": 10}
    if cpu is not None:
        record["cpuUsPerUnit"] = cpu
    return record


class CpuColumnTests(SynchronousTestCase):
    def test_summary(self) -> None:
        """
        The summary keeps the median CPU per unit, and none when a run
        lacks it.
        """
        summary = summariseVariant([run(1, 300), run(1, 100), run(1, 200)])
        self.assertEqual(summary["cpuUsPerUnit"], 200)
        self.assertNotIn("cpuUsPerUnit", summariseVariant([run(1, 300), run(1, None)]))

    def rows(self, workload: str, runs: dict[str, list[dict[str, Any]]]) -> list[str]:
        table = workloadTable(summarise(runs), workload)
        return [line for line in table.splitlines() if line.startswith("| ")]

    def test_sqlTable(self) -> None:
        """
        The SQL table has the column: our variant's CPU, the processes
        variant's marked as the parent's, pgbench's as unknown.
        """
        head, *rows = self.rows(
            "sql",
            {
                "sql-adbapi": [run(100, 308.4)],
                "sql-pgbench": [run(200, None)],
                "sql-sasync": [run(50, 1103)],
                "sql-sasync-processes": [run(70, 139)],
            },
        )
        self.assertIn("client CPU µs per op", head)
        cells = {row.split(" | ")[0].strip("|* "): row.split(" | ")[7] for row in rows}
        self.assertEqual(
            cells,
            {
                "sql-adbapi": "308",
                "sql-pgbench": "-",
                "sql-sasync": "1,103",
                "sql-sasync-processes": "139 (parent)",
            },
        )

    def test_streamTableWithout(self) -> None:
        """
        Streaming tables (CPU per row is too small to compare) have none.
        """
        head, *_ = self.rows("stream", {"stream-psycopg2-named": [run(1e6, 0.5)]})
        self.assertNotIn("CPU", head)
