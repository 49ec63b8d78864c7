"""A reader process for the concurrency test: queries in a loop and reports totals and errors.

Usage: python -m tests.serving_layer.reader (api|file) SECONDS OUTPUT.json  (settings from LAMBDA_*)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import duckdb

from lambda_contracts.settings import get_settings
from serving_layer.database_file import latest_database
from serving_layer.query import query

TOTALS = (
    "SELECT (SELECT coalesce(sum(views), 0) FROM page_views_per_minute)"
    " + (SELECT coalesce(sum(orders), 0) FROM product_sales_per_hour)"
    " + (SELECT coalesce(sum(readings), 0) FROM sensor_stats_per_minute) AS counted"
)


def main(mode: str, seconds: float, output: Path) -> None:
    settings = get_settings()
    totals: list[int] = []
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if mode == "api":
                totals.append(int(query(settings, TOTALS).column("counted")[0].as_py()))
            else:
                with duckdb.connect(str(latest_database(settings)), read_only=True) as connection:
                    row = connection.execute(TOTALS).fetchone()
                    totals.append(int(row[0]) if row else 0)
        except Exception as error:  # the test asserts there are none; report them all
            errors.append(f"{type(error).__name__}: {error}")
        time.sleep(0.1)  # several readers on two cores: leave room for the writers
    output.write_text(json.dumps({"totals": totals, "errors": errors}))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), Path(sys.argv[3]))
