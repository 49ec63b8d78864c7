"""The endpoint's result cache on a real DuckDB: what it keeps, for how long, and what it never keeps.

The served table is changed behind the cache's back (without a new refresh) to tell a kept result
from a fresh run: in the serving process tables change only in a refresh, which writes its number.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import duckdb
import pytest

from serving_layer.pgwire import catalog
from serving_layer.pgwire.results import REFRESH_TABLE, ResultCache
from serving_layer.pgwire.statements import StatementError, StatementRunner, Watchdog

pytestmark = pytest.mark.unit
TOP = "SELECT page, sum(views) AS views FROM pages GROUP BY page ORDER BY views DESC, page LIMIT 10"


class Served:
    """A served schema with one table, a refresh counter, and a cache over them."""

    def __init__(self, max_rows: int = 1_000) -> None:
        self.database = duckdb.connect()
        catalog.install(self.database.cursor())
        self.database.execute(f"CREATE TABLE {catalog.SERVED_SCHEMA}.pages (page VARCHAR, views BIGINT)")
        self.database.execute(f"CREATE TABLE {REFRESH_TABLE} (number BIGINT)")
        self.set_views(1)
        self.refresh = 0
        self.next_refresh()
        self.outcomes: Counter[str] = Counter()
        self.cache = ResultCache(
            self.database,
            lambda: self.refresh,
            max_rows,
            catalog.SERVED_SCHEMA,
            lambda outcome: self.outcomes.update([outcome]),
        )

    def set_views(self, views: int) -> None:
        self.database.execute(f"DELETE FROM {catalog.SERVED_SCHEMA}.pages")
        self.database.execute(f"INSERT INTO {catalog.SERVED_SCHEMA}.pages VALUES ('/a', {views}), ('/b', 2)")

    def next_refresh(self, views: int | None = None) -> None:
        """A refresh, as the serving process commits one: new rows and its number in one transaction."""
        self.database.execute("BEGIN")
        if views is not None:
            self.set_views(views)
        self.refresh += 1
        self.database.execute(f"DELETE FROM {REFRESH_TABLE}")
        self.database.execute(f"INSERT INTO {REFRESH_TABLE} VALUES ({self.refresh})")
        self.database.execute("COMMIT")

    def runner(self) -> StatementRunner:
        connection = self.database.cursor()
        connection.execute(f"SET search_path = '{catalog.SERVED_SCHEMA}'")
        return StatementRunner(connection, Watchdog(5.0), self.cache)


def rows(runner: StatementRunner, sql: str, parameters: list[object] | None = None) -> list[tuple[object, ...]]:
    return list(runner.run(sql, parameters).rows)


@pytest.fixture
def served() -> Iterator[Served]:
    served = Served()
    yield served
    served.database.close()


def test_a_deterministic_result_is_kept_until_the_next_refresh(served: Served) -> None:
    first, second = served.runner(), served.runner()
    assert rows(first, TOP) == [("/b", 2), ("/a", 1)]
    served.set_views(7)
    assert rows(second, TOP) == [("/b", 2), ("/a", 1)]  # kept: another client, the same refresh
    assert served.outcomes == {"miss": 1, "hit": 1}
    served.next_refresh()
    assert rows(second, TOP) == [("/a", 7), ("/b", 2)]  # a new refresh: run again
    assert rows(first, "SELECT count(*) FROM pages WHERE views >= $1", [5]) == [(1,)]
    assert rows(first, "SELECT count(*) FROM pages WHERE views >= $1", [1]) == [(2,)]  # parameters are in the key


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT random() AS r, views FROM pages",
        "SELECT now() AS t, views FROM pages",
        "SELECT current_timestamp AS t, views FROM pages",
        "SELECT current_date AS d, views FROM pages",
        "SELECT views FROM pages USING SAMPLE 100%",
        "SELECT views FROM pages, range(1)",
        "WITH r AS (SELECT random() AS x) SELECT views FROM pages, r",
        "SELECT (SELECT count(*) FROM pg_class) AS c, views FROM pages",
        "SELECT current_setting('TimeZone') AS z, views FROM pages",
    ],
)
def test_what_may_change_without_a_refresh_is_never_kept(served: Served, sql: str) -> None:
    runner = served.runner()
    before = rows(runner, sql)
    served.set_views(9)
    after = rows(runner, sql)
    assert {row[-1] for row in after} == {2, 9} != {row[-1] for row in before}
    assert served.outcomes == {"bypass": 2}


def test_a_transaction_is_answered_from_the_refresh_of_its_snapshot(served: Served) -> None:
    early, late, reader = served.runner(), served.runner(), served.runner()
    early.run("BEGIN")
    assert rows(early, TOP) == [("/b", 2), ("/a", 1)]  # its snapshot: refresh 1
    served.next_refresh(views=5)
    assert rows(reader, TOP) == [("/a", 5), ("/b", 2)]  # refresh 2, kept
    late.run("BEGIN")
    assert rows(late, TOP) == [("/a", 5), ("/b", 2)]  # a transaction of refresh 2: from the cache
    assert rows(early, TOP) == [("/b", 2), ("/a", 1)]  # still refresh 1, as its snapshot reads
    for runner in (early, late):
        runner.run("COMMIT")
    assert served.outcomes == {"miss": 3, "hit": 1}


def test_a_result_read_across_a_refresh_is_not_kept(served: Served) -> None:
    """A statement outside a transaction files its result only if the refresh committed before it started
    is still the newest after: otherwise it cannot tell which of the two it read."""
    runner = served.runner()
    committed = served.cache.committed
    answers = iter([1, 2])  # a refresh committed while the statement started
    served.cache.committed = lambda: next(answers)  # type: ignore[method-assign]
    assert rows(runner, TOP) == [("/b", 2), ("/a", 1)]
    served.cache.committed = committed  # type: ignore[method-assign]
    served.set_views(6)
    assert rows(runner, TOP) == [("/a", 6), ("/b", 2)]  # nothing was kept: it runs again
    assert served.outcomes == {"miss": 2}


def test_large_failed_or_unfinished_results_are_not_kept() -> None:
    served = Served(max_rows=3)
    runner = served.runner()
    many = "SELECT v.views FROM pages AS v, pages AS w, pages AS x ORDER BY 1"  # 8 rows: over the bound
    assert len(rows(runner, many)) == 8
    outcome = runner.run(TOP)
    next(outcome.rows)  # a client that stops after one row (a suspended portal) files nothing
    with pytest.raises(StatementError):
        rows(runner, "SELECT CAST(page AS INTEGER) FROM pages")
    served.set_views(4)
    assert len(rows(runner, many)) == 8
    assert rows(runner, TOP) == [("/a", 4), ("/b", 2)]
    assert served.outcomes == {"miss": 5}


def test_older_refreshes_are_forgotten_and_the_row_bound_holds() -> None:
    served = Served(max_rows=4)
    runner = served.runner()
    rows(runner, TOP)  # 2 rows
    rows(runner, "SELECT page FROM pages ORDER BY page")  # 2 more: at the bound
    rows(runner, "SELECT views FROM pages ORDER BY views")  # 2 more: the oldest goes
    served.set_views(3)
    assert rows(runner, "SELECT views FROM pages ORDER BY views") == [(1,), (2,)]  # kept
    assert rows(runner, TOP) == [("/a", 3), ("/b", 2)]  # evicted: run again
    statement = served.cache.statement(TOP, [])
    assert statement is not None and served.cache.get(1, statement) is not None
    served.next_refresh(views=8)
    assert rows(runner, TOP) == [("/a", 8), ("/b", 2)]
    assert served.cache.get(1, statement) is None  # results of older refreshes are gone
