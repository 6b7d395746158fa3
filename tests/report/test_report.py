"""`nift report` on a real run (tests/report/conftest.py): the files it writes, that it holds the run's own numbers,
that the HTML is self-contained, partial runs, skip / re-run, secrets and damaged inputs."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from nift.artifacts import read_manifest, write_json
from nift.cli import main
from nift.errors import InputError
from nift.report import run
from nift.report.config import ReportConfig

QUIET = {"log": lambda *_: None}
FIGURES = {"lengths.png", "loss.png", "results.png", "timings.png", "compare.png"}


class _Page(HTMLParser):
    """Visible text, tags, and every attribute that could load something."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []
        self.links: list[tuple[str, str, str]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_style = tag == "style"
        for k, v in attrs:
            if k in ("src", "href", "srcset", "poster", "data", "action", "background", "xlink:href") or (
                    k == "style" and v and "url(" in v):
                self.links.append((tag, k, v or ""))

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        (self.styles if self._in_style else self.text).append(data)


def page(html: str) -> _Page:
    p = _Page()
    p.feed(html)
    return p


def visible(html: str) -> str:
    return re.sub(r"\s+", " ", " ".join(page(html).text))


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _copy_run(src: Path, dst: Path, *stages: str) -> Path:
    """Some stage folders of a run (weights and caches left out: the report reads manifests and data files)."""
    for s in stages:
        shutil.copytree(src / s, dst / s, ignore=shutil.ignore_patterns("model", "adapter", "_cache", "*.sqlite",
                                                                        "judge_cache"))
    return dst


# ------------------------------------------------------------------------------------------------ the real run


def test_report_files_and_manifest(report_run: Path):
    out = report_run / "report"
    assert {p.name for p in out.iterdir()} == {"report.html", "report.md", "manifest.json", *FIGURES}
    m = read_manifest(out)
    assert set(m["inputs"]) == {"prepare", "distill", "audit", "train", "merge", "eval/before", "eval/after",
                                "compare"}
    assert m["stats"]["missing"] == []
    assert set(m["stats"]["figures"]) == FIGURES
    md = (out / "report.md").read_text(encoding="utf-8")
    for name in FIGURES:
        assert f"]({name})" in md
        assert (out / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_report_holds_the_runs_own_numbers(report_run: Path):
    out = report_run / "report"
    html_text = visible((out / "report.html").read_text(encoding="utf-8"))
    md = (out / "report.md").read_text(encoding="utf-8")
    prep, dist, aud, tr = (read_manifest(report_run / s) for s in ("prepare", "distill", "audit", "train"))
    expected = []
    # data
    expected.append(f"{prep['stats']['documents_written']} documents sampled")
    prompt_words = sorted(len(r["prompt"].split()) for r in _rows(report_run / "prepare" / "data.jsonl"))
    expected.append(f"| prompt words | 6 | {prompt_words[0]} |")  # md table row: n and min
    # cost ledger: the teacher's tokens and dollars from distill's manifest
    tot = dist["cost"]["total"]
    expected.append(f"{tot['prompt_tokens']:,} in + {tot['completion_tokens']:,} out tokens")
    expected.append(f"| distill | teacher | `hf:{dist['config']['teacher']['model']}` | {tot['requests']} | 0 | "
                    f"{tot['prompt_tokens']:,} | {tot['completion_tokens']:,} | $0.00 |")
    judge = aud["cost"]["judge"]
    expected.append(f"| audit | judge | `hf:{aud['config']['judge']['model']}` | {judge['requests']} |")
    # audit: Table 8, kept / dropped
    ds = next(iter(aud["stats"]["datasets"].values()))
    inst = ds["judge"]["instructional"]
    expected.append(f"{inst['percent']:.2f}% [{inst['ci95'][0]:.1f}, {inst['ci95'][1]:.1f}]")
    expected.append(f"{aud['stats']['kept']} of {aud['stats']['rows']} rows kept")
    # training: the last logged losses from train/log.jsonl
    log = _rows(report_run / "train" / "log.jsonl")
    final = [r["loss"] for r in log if "loss" in r][-1]
    final_eval = [r["eval_loss"] for r in log if "eval_loss" in r][-1]
    expected.append(f"final logged train loss | {final:.4g}")
    expected.append(f"final held-out eval loss | {final_eval:.4g}")
    expected.append(f"optimizer steps | {tr['stats']['steps']}")
    # results: IFEval and the stop rate from each results.json, the paired test from compare.json
    for name in ("before", "after"):
        res = json.loads((report_run / "eval" / name / "results.json").read_text())
        for key in ("prompt_level_strict_acc", "inst_level_loose_acc"):
            expected.append(f"{100 * res['benchmarks']['ifeval'][key]:.1f}%")
        expected.append(f"IFEval ({res['benchmarks']['ifeval']['answers']['n']} answers)")
    cmp = json.loads((report_run / "eval" / "compare" / "compare.json").read_text())
    words = next(r for r in cmp["metrics"] if r["metric"] == "signals/words")
    expected.append(f"| signals/words | {words['n_paired']} |")
    expected.append(f"wilcoxon (n={words['n_paired']})")
    stopped = next(r for r in cmp["metrics"] if r["metric"] == "signals/stopped")
    claim = next(r for r in cmp["metrics"] if r["metric"] == "ifeval/inst_loose")
    expected.append("**Against the paper's claim that non-instructional fine-tuning improves instruction following, "
                    f"this run {'does not reproduce' if claim['test']['p_value'] >= 0.05 else ''}")
    expected.append(f"IFEval instruction-level loose accuracy {100 * claim['mean_a']:.1f}% → "
                    f"{100 * claim['mean_b']:.1f}%")
    expected.append(f"What this run shows (before → after, paired over the same prompts): stopped by itself (EOS) "
                    f"{100 * stopped['mean_a']:.1f}% → {100 * stopped['mean_b']:.1f}%")

    # examples: an answer of each side, as generated
    a_before = _rows(report_run / "eval" / "before" / "answers" / "ifeval.jsonl")[0]
    a_after = _rows(report_run / "eval" / "after" / "answers" / "ifeval.jsonl")[0]
    expected.append(f": IFEval {a_before['id']} ")  # every shared prompt is shown (4 examples of 4)
    # timings from the manifests
    expected.append(f"| merge | {read_manifest(report_run / 'merge')['timings']['started'].replace('T', ' ')[:19]}")
    assert "the student was trained with `vanilla`" in md and "the student was trained with vanilla" in html_text
    for s in expected:
        assert s in md, s
    for s in expected:
        if not s.startswith("|"):
            assert s.replace(" | ", " ").replace("**", "") in html_text, s
    for ans in (a_before, a_after):
        snippet = ans["answer"].strip().split("\n")[0][:40].strip()
        assert snippet in html_text and snippet in md
    # each shown answer carries the badge of its own ending
    for ans in (a_before, a_after):
        s = ans["signals"]
        badge = ("stopped by itself (EOS)" if s["stopped"] else "cut at the template&#x27;s stop string"
                 if s["stop_string"] else f"hit the {ans['max_new_tokens']}-token limit")
        assert badge in html_text, badge


def test_html_is_self_contained(report_run: Path):
    html = (report_run / "report" / "report.html").read_text(encoding="utf-8")
    p = page(html)
    assert not {"script", "link", "iframe", "object", "embed", "base"} & set(p.tags)
    css = "".join(p.styles)
    assert "url(" not in css and "@import" not in css and "@font-face" not in css
    images = [v for tag, k, v in p.links if tag == "img"]
    assert all(v.startswith("data:image/png;base64,") for v in images)
    assert all(v.startswith("#") for tag, k, v in p.links if tag != "img"), p.links
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//|file:)", html, re.I)
    # the embedded pictures are exactly the PNGs written beside report.md
    embedded = {base64.b64decode(v.split(",", 1)[1]) for v in images}
    assert embedded == {(report_run / "report" / n).read_bytes() for n in FIGURES}


def test_up_to_date_report_is_skipped_and_changes_rerun_it(report_run: Path, tmp_path: Path):
    assert run(ReportConfig(n_boot=200), report_run, **QUIET).skipped
    copy = _copy_run(report_run, tmp_path / "run", "prepare", "distill", "audit", "train", "eval")
    first = run(ReportConfig(n_boot=200), copy, **QUIET)
    assert not first.skipped and first.manifest["stats"]["missing"] == []
    assert "merge" not in first.manifest["stats"]["sections"]  # optional: eval can read train/ directly
    assert run(ReportConfig(n_boot=200), copy, **QUIET).skipped
    # an upstream stage that re-ran (new manifest) re-runs the report; so does a report setting
    m = read_manifest(copy / "train")
    m["created_at"] = "2000-01-01T00:00:00+00:00"
    write_json(copy / "train" / "manifest.json", m)
    assert not run(ReportConfig(n_boot=200), copy, **QUIET).skipped
    again = run(ReportConfig(n_boot=200, examples=1), copy, **QUIET)
    assert not again.skipped
    html = (copy / "report" / "report.html").read_text(encoding="utf-8")
    assert "Example 1:" in html and "Example 2:" not in html


def test_partial_run_says_what_is_missing(report_run: Path, tmp_path: Path):
    copy = _copy_run(report_run, tmp_path / "run", "prepare")
    (copy / "distill").mkdir()
    (copy / "distill" / "_started.json").write_text("{}")  # interrupted: no manifest
    res = run(ReportConfig(), copy, **QUIET)
    assert set(res.manifest["stats"]["missing"]) == {"results", "examples", "audit", "training", "cost"}
    assert set(res.manifest["inputs"]) == {"prepare"}
    text = visible((copy / "report" / "report.html").read_text(encoding="utf-8"))
    assert "6 documents sampled" in text
    assert "distill/ has no manifest.json: the stage did not finish" in text
    assert f"nift distill --run-dir {copy}" in text and f"nift audit --run-dir {copy}" in text
    assert "No finished evaluation" in text
    assert {p.name for p in (copy / "report").iterdir()} == {"report.html", "report.md", "lengths.png",
                                                             "timings.png", "manifest.json"}


def test_which_comparison_the_report_uses(report_run: Path, tmp_path: Path):
    theirs = json.loads((report_run / "eval" / "compare" / "compare.json").read_text())
    # `nift compare`'s own folder is used as it is
    copy = _copy_run(report_run, tmp_path / "cli", "prepare", "eval")
    (copy / "eval" / "compare").rename(copy / "eval" / "compare-before-vs-after")
    (copy / "eval" / "compare-before-vs-after" / "inputs.json").unlink()
    res = run(ReportConfig(n_boot=200), copy, **QUIET)
    assert "compare" in res.manifest["inputs"] and not (copy / "report" / "compare").exists()
    assert f"(`{copy / 'eval' / 'compare-before-vs-after'}`)" in (copy / "report" / "report.md").read_text()
    # none in the run, or one made before `after` was evaluated again: the report runs the comparison itself
    for case in ("none", "stale"):
        copy = _copy_run(report_run, tmp_path / case, "prepare", "eval")
        if case == "none":
            shutil.rmtree(copy / "eval" / "compare")
        else:
            m = read_manifest(copy / "eval" / "after")
            m["created_at"] = "2000-01-01T00:00:00+00:00"
            write_json(copy / "eval" / "after" / "manifest.json", m)
        res = run(ReportConfig(n_boot=200), copy, **QUIET)
        mine = json.loads((copy / "report" / "compare" / "compare.json").read_text())
        assert [m["test"] for m in mine["metrics"]] == [m["test"] for m in theirs["metrics"]]
        assert "compare" not in res.manifest["inputs"]
        md = (copy / "report" / "report.md").read_text(encoding="utf-8")
        assert "(run by this report)" in md and "| signals/stopped |" in md


def test_secrets_in_a_manifest_never_reach_the_report(report_run: Path, tmp_path: Path):
    copy = _copy_run(report_run, tmp_path / "run", "prepare")
    m = read_manifest(copy / "prepare")
    m["config"]["api_key"] = "sk-THIS-MUST-NOT-LEAK"
    write_json(copy / "prepare" / "manifest.json", m)
    run(ReportConfig(), copy, **QUIET)
    for name in ("report.html", "report.md"):
        text = (copy / "report" / name).read_text(encoding="utf-8")
        assert "sk-THIS-MUST-NOT-LEAK" not in text and "redacted" in text


def test_damaged_inputs_and_empty_run_dirs_are_clear_errors(report_run: Path, tmp_path: Path, capsys):
    with pytest.raises(InputError, match="no such run directory"):
        run(ReportConfig(), tmp_path / "nope", **QUIET)
    (tmp_path / "empty").mkdir()
    assert main(["report", "--run-dir", str(tmp_path / "empty")]) == 2
    assert "holds no finished stage" in capsys.readouterr().err
    copy = _copy_run(report_run, tmp_path / "run", "prepare", "eval")
    bad = copy / "eval" / "after" / "per_item.jsonl"
    lines = bad.read_text().splitlines()
    lines[2] = lines[2][:-5]
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=re.escape(f"{bad}:3: malformed JSON")):
        run(ReportConfig(), copy, **QUIET)


def test_cli_writes_the_report(report_run: Path, tmp_path: Path, capsys):
    copy = _copy_run(report_run, tmp_path / "run", "prepare", "distill")
    assert main(["report", "--run-dir", str(copy), "--title", "My run", "--bins", "10"]) == 0
    assert str(copy / "report" / "report.html") in capsys.readouterr().out
    html = (copy / "report" / "report.html").read_text(encoding="utf-8")
    assert "<title>My run</title>" in html
    assert read_manifest(copy / "report")["config"]["bins"] == 10


def _answer_row(rid: str, answer: str, finish: str, strict: bool, rep: float = 0.0) -> dict:
    return {"benchmark": "ifeval", "id": rid, "turn": 0, "status": "ok", "question": f"Question {rid}?",
            "answer": answer, "finish_reason": finish, "completion_tokens": 7, "max_new_tokens": 32,
            "template": "vanilla", "ifeval": {"strict": [strict], "prompt_strict": strict},
            "signals": {"stopped": finish == "stop", "empty": not answer.strip(), "repeated_ngram_share": rep,
                        "echo": False, "words": len(answer.split())}}


def test_examples_are_chosen_by_kind_of_change_in_a_fixed_order(tmp_path: Path):
    """Pairs built to show one kind of change each: the report shows one of each kind in the order of the kinds
    (improvements first), pinned ids before them, and marks sentences that repeat an earlier one."""
    from nift.report.document import Document, to_html
    from nift.report.examples import examples
    from nift.report.rundir import RunDir

    loop = "It was late. The facilitator will help. The facilitator will help."
    pairs = {  # id: (before, after)
        "1": (("a b", "length", False), ("c d", "length", False)),  # no change
        "2": ((loop, "length", False, 0.5), ("Done.", "stop", False)),  # stops now, repetition gone
        "3": (("", "stop", False), ("An answer.", "stop", False)),  # answers now
        "4": (("Wrong.", "stop", False), ("Right.", "stop", True)),  # follows the instructions now
        "5": (("Short.", "stop", False), ("Long on and on", "length", False)),  # hits the limit now
        "10": (("x", "length", False), ("Fine.", "stop", False)),  # stops now, after "2" in id order
    }
    for side in (0, 1):
        name = ("before", "after")[side]
        d = tmp_path / "eval" / name
        rows = [_answer_row(rid, *p[side]) for rid, p in pairs.items()]
        (d / "answers").mkdir(parents=True)
        (d / "answers" / "ifeval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        write_json(d / "manifest.json", {"stage": "eval", "config": {}})
    run_dir = RunDir.open(tmp_path)
    sec = examples(run_dir, "before", "after", 4, [], 1500)
    titles = [b.title for b in sec.blocks if hasattr(b, "answers")]
    assert titles == ["Example 1: IFEval 2", "Example 2: IFEval 3", "Example 3: IFEval 4", "Example 4: IFEval 5"]
    counts = dict(next(b for b in sec.blocks if hasattr(b, "rows")).rows)
    assert counts["stops by itself now (hit the token limit before)"] == "2"
    assert counts["repetition gone"] == "1" and counts["no change of these kinds"] == "1"
    pinned = examples(run_dir, "before", "after", 3, ["ifeval:1", "10"], 1500)
    assert [b.title for b in pinned.blocks if hasattr(b, "answers")] == [
        "Example 1: IFEval 1", "Example 2: IFEval 10", "Example 3: IFEval 2"]
    html = to_html(Document("t", [], [sec]))
    assert html.count('<mark class="rep">The facilitator will help.</mark>') == 1
    assert "(empty answer: no content was generated)" in html
    assert "hit the 32-token limit" in html and "stopped by itself (EOS)" in html
