"""A pass/fail column holds 0, 1, true or false (issue 13, item 6): `nift compare` and the study table used to take
0.7 as a value McNemar's test then counted as a pass; a NaN or inf is left out as missing, with a counted warning,
in the study table as in `nift compare`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from nift.errors import InputError


def _eval(folder: Path, values: list, kind: str = "binary") -> Path:
    folder.mkdir(parents=True)
    rows = [{"metric": "ifeval/inst_loose", "unit": str(i), "value": v, "kind": kind} for i, v in enumerate(values)]
    # json.dumps writes NaN and Infinity, as Python's json module reads them back
    (folder / "per_item.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "manifest.json").write_text("{}", encoding="utf-8")
    return folder


@pytest.mark.parametrize("bad", [0.7, 2, -1, "1", None])
def test_compare_refuses_a_pass_fail_value_that_is_not_0_or_1(tmp_path: Path, bad):
    from nift.eval.compare import compare

    a = _eval(tmp_path / "a", [1, 0, 1, 1])
    b = _eval(tmp_path / "b", [1, bad, 0, 1])
    with pytest.raises(InputError) as e:
        compare(a, b, out=tmp_path / "out", n_boot=10, log=lambda *_: None)
    assert f"{b / 'per_item.jsonl'}:2: " in str(e.value), str(e.value)


def test_compare_takes_booleans_and_whole_floats_as_pass_fail(tmp_path: Path):
    from nift.eval.compare import compare

    a = _eval(tmp_path / "a", [True, False, 1.0, 0.0])
    b = _eval(tmp_path / "b", [True, True, 1, 1])
    res = compare(a, b, out=tmp_path / "out", n_boot=10, log=lambda *_: None)
    assert res["metrics"][0]["mean_a"] == 0.5 and res["metrics"][0]["mean_b"] == 1.0


def test_a_score_may_be_any_finite_number(tmp_path: Path):
    from nift.eval.compare import compare

    a = _eval(tmp_path / "a", [0.7, 2.5, 9], kind="score")
    b = _eval(tmp_path / "b", [0.8, 3.5, 10], kind="score")
    res = compare(a, b, out=tmp_path / "out", n_boot=10, log=lambda *_: None)
    assert res["metrics"][0]["n_paired"] == 3


def test_study_refuses_a_pass_fail_value_that_is_not_0_or_1(tmp_path: Path):
    from nift import study

    path = _eval(tmp_path / "s1", [1, 0.7, 0]) / "per_item.jsonl"
    with pytest.raises(InputError, match=rf"{path}:2: ifeval/inst_loose is pass/fail but its value is 0.7"):
        study.Arm("one", {"1": path.parent})


def test_study_leaves_nan_and_inf_out_with_a_counted_warning(tmp_path: Path):
    from nift import study

    arm = study.Arm("one", {"1": _eval(tmp_path / "s1", [1, math.nan, 0, math.inf, 1])})
    assert arm.units("ifeval/inst_loose") == {"0": 1.0, "2": 0.0, "4": 1.0}
    assert len(arm.warnings) == 1 and "2 value(s) of ifeval/inst_loose are not finite" in arm.warnings[0]
    assert "line 2" in arm.warnings[0]
