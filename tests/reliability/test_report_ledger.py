"""The report shows the lost-in-transit ledger (issue 13, item 3 in the report): requests that were sent and may
have been billed, though no answer came back, are a row of the cost ledger and a note with the most billed."""

from __future__ import annotations

import json
from pathlib import Path

from nift.report import spending
from nift.report.document import Para, Table
from nift.report.rundir import RunDir


def _run(tmp_path: Path, lost: int) -> RunDir:
    d = tmp_path / "run" / "distill"
    d.mkdir(parents=True)
    usage = {"requests": 6, "prompt_tokens": 600, "completion_tokens": 120, "cost_usd": 0.1,
             "cost_unknown_requests": 0}
    cost = {"total": usage, "this_run": usage, "cached_ids": 0,
            "requests_this_run": {"sent": 6 + lost, "answered": 6, "stored": 6, "refused": 0,
                                  "lost_in_transit": lost, "lost_max_cost_usd": 0.054 if lost else 0.0},
            "lost_in_transit": {"requests": lost, "max_cost_usd": 0.054 if lost else 0.0, "cost_unknown_requests": 0},
            "max_billed_usd": 0.154 if lost else 0.1}
    (d / "manifest.json").write_text(json.dumps({"stage": "distill", "cost": cost, "stats": {},
                                                 "config": {"teacher": {"backend": "openai", "model": "fake-1"}}}))
    return RunDir.open(tmp_path / "run")


def test_lost_in_transit_is_a_row_of_the_ledger_and_a_note(tmp_path: Path):
    sec = spending.cost(_run(tmp_path, lost=3))
    table = next(b for b in sec.blocks if isinstance(b, Table))
    assert table.rows[0][:2] == ["distill", "teacher"]
    assert table.rows[1] == ["distill", "lost in transit", "`openai:fake-1`", "3", "", "–", "–", "≤ $0.05", ""]
    assert table.rows[-1][3] == "6" and table.rows[-1][7] == "**$0.10**"  # the total: stored answers only
    note = " ".join(b.text for b in sec.blocks if isinstance(b, Para))
    assert "3 teacher request(s) were sent but no usable answer came back" in note
    assert "up to $0.05" in note and "at most $0.15" in note


def test_no_row_when_nothing_was_lost(tmp_path: Path):
    sec = spending.cost(_run(tmp_path, lost=0))
    table = next(b for b in sec.blocks if isinstance(b, Table))
    assert [r[1] for r in table.rows] == ["teacher", ""]
    assert not any("lost" in b.text for b in sec.blocks if isinstance(b, Para))
