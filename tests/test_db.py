"""db.py's own idioms: a transaction rolls back when its block raises, a registered frame is gone after
its block (also when it raises), and meta upserts replace."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from densprune import db


def test_transaction_commits_or_rolls_back(tmp_path):
    con = duckdb.connect(str(tmp_path / "t.duckdb"))
    con.execute("CREATE TABLE t (x INTEGER)")
    with db.transaction(con):
        con.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(RuntimeError, match="boom"):
        with db.transaction(con):
            con.execute("INSERT INTO t VALUES (2)")
            raise RuntimeError("boom")
    assert con.execute("SELECT list(x) FROM t").fetchone()[0] == [1]
    with db.transaction(con):  # the connection is usable again: no transaction left open
        con.execute("INSERT INTO t VALUES (3)")
    assert con.execute("SELECT list(x ORDER BY x) FROM t").fetchone()[0] == [1, 3]


def test_registered_frames_are_unregistered_on_error(tmp_path):
    con = duckdb.connect()
    with pytest.raises(duckdb.Error):
        with db.registered(con, "_f", pd.DataFrame({"a": [1, 2]})):
            assert con.execute("SELECT sum(a) FROM _f").fetchone()[0] == 3
            con.execute("SELECT no_such_column FROM _f")
    with pytest.raises(duckdb.CatalogException):
        con.execute("SELECT * FROM _f")


def test_meta_upsert_replaces(tmp_path):
    con = duckdb.connect()
    con.execute(db.META_DDL)
    with db.transaction(con):
        db._upsert_meta(con, {"k": 1, "j": "a"})
        db._upsert_meta(con, {"k": 2})
    assert dict(con.execute("SELECT key, value FROM meta ORDER BY key").fetchall()) == {"j": '"a"', "k": "2"}
