"""Tabulate finished runs: one row per run and method, from their metrics.json.

    python -m hpcvsr.summarize runs/*/ [--json summary.json]
"""

from __future__ import annotations


