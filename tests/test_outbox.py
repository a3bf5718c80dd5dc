"""The durable outbox: WAL mode, order, acknowledgement, bounds that drop telemetry first and say so."""
import logging
import time

from edge_agent.outbox import Outbox


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
