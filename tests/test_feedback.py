""" "That was normal" over a real broker: an alarm's windows join the bank and the threshold is
fitted again, the action is audited and goes out as a ``feedback`` event, and ``undo`` puts the
bank back byte for byte."""

from __future__ import annotations

import json
import shutil

import numpy as np

from edge_agent.scoring.bank import MemoryBank
from edge_agent.state.paths import bank_path, feedback_log
from tests.brokers import broker, wait_for  # noqa: F401 - fixture
from tests.test_commands import Operator, Running
from tests.test_mqtt import agent_config
from tests.test_status_page import _anomalous


def test_normal_joins_the_bank_is_audited_and_undo_restores_it(broker, sensitive, tmp_path):  # noqa: F811
    st = tmp_path / "st"
    shutil.copytree(sensitive, st)  # feedback writes the bank: a copy of its own
    before = bank_path(st, "fan01").read_bytes()
    extra = "  commands: true\nevidence: {enabled: false}\n"
    cfg = agent_config(tmp_path / "c.yaml", st, broker.port, _anomalous(tmp_path), extra, loop=True, continuous=True)
    op = Operator(broker.port)
    run = Running(cfg, learning=False)
    try:
        assert wait_for(lambda: any(a["event"] == "start" for a in op.payloads("fan01/alarm")), 90)
        alarm_id = next(a for a in op.payloads("fan01/alarm") if a["event"] == "start")["alarm_id"]
        r = op.send({"command": "normal", "alarm_id": "0" * 32})
        assert r["ok"] is False and "no windows kept" in r["error"], r
        # the agent keeps no enrolment embeddings: feedback reads them from the file, which must
        # still be the bank in force (here a calibrate the agent has not reloaded)
        assert run.agent.streams["fan01"].bank.enrolled == {}
        other = MemoryBank.load(bank_path(st, "fan01"))
        other.threshold *= 2
        other.save(bank_path(st, "fan01"))
        r = op.send({"command": "normal", "alarm_id": alarm_id})
        assert r["ok"] is False and "not the bank the agent scores with" in r["error"], r
        bank_path(st, "fan01").write_bytes(before)
        r = op.send({"command": "normal", "alarm_id": alarm_id, "note": "a door slam"})
        assert r["ok"] is True and r["message"].startswith("marked normal:"), r
        bank = MemoryBank.load(bank_path(st, "fan01"))
        groups = bank.enrolled["target"][1]
        fb = [g for g in np.unique(groups) if str(g).startswith("fb-")]
        assert len(fb) == 1 and np.sum(groups == fb[0]) >= 5  # the alarm's windows, as a group of their own
        assert wait_for(lambda: op.payloads("fan01/feedback"), 10)
        ev = op.payloads("fan01/feedback")[-1]
        assert ev["action"] == "normal" and ev["by"] == "mqtt" and ev["alarm_id"] == alarm_id
        assert ev["note"] == "a door slam" and ev["threshold_after"] == bank.threshold
        assert run.agent.streams["fan01"].bank.threshold == bank.threshold  # in force at once
        assert run.agent.streams["fan01"].bank.enrolled == {}
        log = [json.loads(x) for x in feedback_log(st, "fan01").read_text().splitlines()]
        assert [e["action"] for e in log] == ["normal"] and log[0]["feedback_id"] == ev["feedback_id"]
        r = op.send({"command": "undo", "feedback_id": "abcd"})
        assert r["ok"] is False and "no feedback abcd" in r["error"]
        r = op.send({"command": "undo"})
        assert r["ok"] is True and "undone" in r["message"], r
        assert bank_path(st, "fan01").read_bytes() == before  # exactly the bank before the feedback
        assert wait_for(lambda: len(op.payloads("fan01/feedback")) == 2, 10)
        assert op.payloads("fan01/feedback")[-1]["action"] == "undo"
        r = op.send({"command": "undo"})
        assert r["ok"] is False and "no feedback to undo" in r["error"]
    finally:
        run.stop()
        op.sub.close()
