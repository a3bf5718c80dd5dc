"""The durable outbox: WAL mode, order, acknowledgement, bounds that drop telemetry first and say so."""

import logging
import time

from edge_agent.publish.outbox import Outbox


def test_order_ack_and_persistence(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    assert ob.journal_mode() == "wal"
    ids = [ob.put("m1", "alarm", {"i": i}) for i in range(5)]
    rows = ob.pending()
    assert [r.data["i"] for r in rows] == list(range(5)) and [r.id for r in rows] == ids
    ob.ack(ids[0])
    assert [r.data["i"] for r in ob.pending(after_id=ids[1])] == [2, 3, 4]
    ob.close()
    again = Outbox(tmp_path / "o.sqlite")  # a restart sees what was not acknowledged
    assert [r.data["i"] for r in again.pending()] == [1, 2, 3, 4]


def test_full_outbox_drops_oldest_telemetry_first_and_logs(tmp_path, caplog):
    ob = Outbox(tmp_path / "o.sqlite", max_rows=10)
    for i in range(4):
        ob.put("m1", "alarm", {"i": i})
    for i in range(6):
        ob.put("m1", "score", {"i": i})
    with caplog.at_level(logging.WARNING, logger="edge_agent.outbox"):
        ob.put("m1", "alarm", {"i": 4})
        ob.put("m1", "state", {"i": 0})
    assert ob.depth() == 10 and ob.depth("alarm") == 5 and ob.depth("score") == 4
    assert ob.dropped["score"] == 2 and ob.dropped["alarm"] == 0
    assert [r.data["i"] for r in ob.pending() if r.kind == "score"] == [2, 3, 4, 5]
    assert "dropped 1 oldest score event(s): outbox full (10 rows)" in caplog.text
    for i in range(20):
        ob.put("m1", "alarm", {"i": 100 + i})
    assert ob.depth("score") == 0 and ob.dropped["alarm"] > 0 and ob.depth() == 10


def test_old_rows_expire_with_a_count(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite", max_age_seconds=0.2)
    ob.put("m1", "score", {})
    ob.put("m1", "alarm", {})
    time.sleep(0.3)
    ob.put("m1", "alarm", {"new": 1})
    assert ob.depth() == 1 and ob.dropped["score"] == 1 and ob.dropped["alarm"] == 1


def _fill(path, n: int) -> None:
    """n alarm rows written straight into the outbox table (fast), as a long outage leaves them."""
    import sqlite3

    Outbox(path).close()
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO outbox (machine, kind, payload, created) VALUES ('m1', 'alarm', '{}', ?)", [(time.time(),)] * n
        )


def _vm_steps_of_put(path) -> int:
    """SQLite virtual-machine instructions one put() executes (a cost measure that does not depend on
    the machine's load, unlike a timing)."""
    ob = Outbox(path)
    ob.put("m1", "alarm", {"warm": 1})  # the first put also runs the age check
    steps = [0]

    def count():
        steps[0] += 1
        return 0

    ob._db.set_progress_handler(count, 10)
    ob.put("m1", "alarm", {"i": 1})
    ob._db.set_progress_handler(None, 10)
    ob.close()
    return steps[0] * 10


def test_a_write_costs_the_same_with_a_large_backlog(tmp_path):
    _fill(tmp_path / "small.sqlite", 1_000)
    _fill(tmp_path / "large.sqlite", 60_000)
    small, large = _vm_steps_of_put(tmp_path / "small.sqlite"), _vm_steps_of_put(tmp_path / "large.sqlite")
    # A COUNT(*) or a scan by age would cost tens of thousands of steps more at 60k rows.
    assert large < 2 * small + 200, (small, large)


def test_counts_stay_exact_across_acks_drops_and_reopen(tmp_path):
    _fill(tmp_path / "o.sqlite", 30)
    ob = Outbox(tmp_path / "o.sqlite", max_rows=40)
    assert ob.depth() == 30 and ob.depth("alarm") == 30
    ids = [ob.put("m1", "score", {"i": i}) for i in range(15)]  # 45 rows > 40: the 5 oldest scores go
    assert ob.depth() == 40 and ob.depth("score") == 10 and ob.dropped["score"] == 5
    ob.ack(ids[-1])
    ob.ack(ids[-1])  # a second ack of the same row changes nothing
    ob.ack(ids[0])  # already dropped
    assert ob.depth() == 39 and ob.depth("score") == 9 and ob.delivered == 1
    ob.close()
    again = Outbox(tmp_path / "o.sqlite", max_rows=40)
    assert again.depth() == 39 and again.depth("alarm") == 30 and again.depth("score") == 9


def _fill_the_disk(ob: Outbox) -> None:
    """SQLite's own cap on the file's pages: every further insert fails with SQLITE_FULL, as on a full disk."""
    pages = ob._db.execute("PRAGMA page_count").fetchone()[0]
    ob._db.execute(f"PRAGMA max_page_count = {pages}")


def test_events_the_disk_cannot_take_are_kept_in_memory_and_sent_in_order(tmp_path, caplog):
    ob = Outbox(tmp_path / "o.sqlite")
    ids = [ob.put("m1", "alarm", {"i": i, "pad": "x" * 3000}) for i in range(3)]
    _fill_the_disk(ob)
    with caplog.at_level(logging.WARNING, logger="edge_agent.outbox"):
        ids += [ob.put("m1", "alarm" if i % 2 else "score", {"i": i, "pad": "x" * 3000}) for i in range(3, 8)]
        assert ob.in_memory == 5 and ob.depth() == 8 and ob.depth("alarm") == 6
        assert caplog.text.count("cannot write to") == 1 and "database or disk is full" in caplog.text
        # one sequence, disk and memory together, oldest first
        assert [r.id for r in ob.pending()] == ids and [r.data["i"] for r in ob.pending()] == list(range(8))
        ob.ack(ids[4])  # delivered from memory
        ob.ack(ids[0])  # and from disk
        assert ob.in_memory == 4 and ob.depth() == 6 and ob.delivered == 2
        assert [r.data["i"] for r in ob.pending(after_id=ids[2], limit=3)] == [3, 5, 6]
        ob._db.execute("PRAGMA max_page_count = 1000000")  # space again
        ids.append(ob.put("m1", "alarm", {"i": 8}))
        assert ob.in_memory == 4 and "takes events again (4 still held in memory)" in caplog.text
        assert [r.data["i"] for r in ob.pending()] == [1, 2, 3, 5, 6, 7, 8]
        ob.close()
    assert "4 undelivered event(s) (3 alarm(s)) the disk could not take are lost with this stop" in caplog.text
    again = Outbox(tmp_path / "o.sqlite")  # what reached the disk survives; new ids follow every id given out
    assert [r.data["i"] for r in again.pending()] == [1, 2, 8]
    assert again.put("m1", "alarm", {"i": 9}) > ids[-1]


def test_a_full_outbox_in_memory_drops_telemetry_first(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite", max_rows=6)
    ob.put("m1", "alarm", {"i": 0, "pad": "x" * 3000})
    _fill_the_disk(ob)
    for i in range(1, 5):
        ob.put("m1", "score", {"i": i, "pad": "x" * 3000})
    for i in range(5, 9):
        ob.put("m1", "alarm", {"i": i, "pad": "x" * 3000})
    assert ob.depth() == 6 and ob.depth("alarm") == 5
    assert ob.dropped == {"alarm": 0, "state": 0, "score": 3, "feedback": 0}
    assert [r.data["i"] for r in ob.pending()] == [0, 4, 5, 6, 7, 8]


def test_an_outbox_that_cannot_be_opened_is_a_clear_error(tmp_path):
    import pytest

    from edge_agent.publish.outbox import OutboxError

    bad = tmp_path / "o.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match="cannot open it .*move the file aside if it is damaged"):
        Outbox(bad)
