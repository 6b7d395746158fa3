"""An API teacher split over several machines: each distills one contiguous shard of the prompts (--shard I/N) into
its own store; `nift cache merge` joins the stores; one more run on the merged store writes the whole output and
sends nothing. The paid provider is the local fake driven through the official Anthropic SDK."""

from __future__ import annotations

import json
import shutil

from helpers.corpora import prepared_run

from nift.artifacts import read_manifest
from nift.cli import main
from nift.distill.stage import shard_rows
from nift.io import read_jsonl

MODEL = "claude-3-haiku-20240307"


def test_shards_cover_every_prompt_once():
    rows = [{"id": str(i)} for i in range(10)]
    for n in (1, 3, 4, 10, 12):
        parts = [shard_rows(rows, f"{i}/{n}") for i in range(n)]
        assert [r for p in parts for r in p] == rows  # contiguous, in order, each row once
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_api_run_split_over_machines_then_merged_into_one_store(fake, tmp_path, capsys):
    run_dir = prepared_run(tmp_path, n=10)
    teacher = ["--teacher.backend", "anthropic", "--teacher.model", MODEL, "--teacher.base-url", fake.anthropic_url,
               "--teacher.api-key-env", fake.key_env, "--teacher.max-tokens", "4", "--no-progress"]
    stores, shard_ids = [], []
    for i in range(3):  # three "machines", each with a copy of the prepared prompts
        machine = tmp_path / f"machine{i}"
        shutil.copytree(run_dir / "prepare", machine / "prepare")
        assert main(["distill", "--run-dir", str(machine), "--shard", f"{i}/3", *teacher]) == 0
        shard_ids.append([r["id"] for r in read_jsonl(machine / "distill" / "data.jsonl")])
        stores.append(str(machine / "distill" / "cache.sqlite"))
    prep = [r["id"] for r in read_jsonl(run_dir / "prepare" / "data.jsonl")]
    assert [i for ids in shard_ids for i in ids] == prep and [len(x) for x in shard_ids] == [3, 3, 4]
    assert len(fake.messages) == 10  # each prompt paid once over the three machines
    capsys.readouterr()

    merged = tmp_path / "merged.sqlite"
    assert main(["cache", "merge", str(merged), *stores]) == 0
    out = capsys.readouterr().out
    assert out.count("batch records added") == 3 and "4 results, 4 added, 0 already in" in out
    assert main(["cache", "merge", str(merged), stores[0]]) == 0  # merging again adds nothing
    assert "3 results, 0 added, 3 already in" in capsys.readouterr().out
    assert main(["cache", "info", str(merged), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)[0]
    assert info["results"] == 10 and info["by_model"] == [{"backend": "anthropic", "model": MODEL, "results": 10}]

    # The whole run on the merged store: every row, nothing sent, the cost ledger of all shards.
    assert main(["distill", "--run-dir", str(run_dir), "--cache", str(merged), *teacher]) == 0
    assert len(fake.messages) == 10
    rows = list(read_jsonl(run_dir / "distill" / "data.jsonl"))
    assert [r["id"] for r in rows] == prep and all(r["completion"] for r in rows)
    m = read_manifest(run_dir / "distill")
    assert m["stats"]["sent"] == 0 and m["stats"]["cached"] == 10
    shard_cost = sum(read_manifest(tmp_path / f"machine{i}" / "distill")["cost"]["total"]["cost_usd"]
                     for i in range(3))
    assert m["cost"]["total"]["cost_usd"] > 0 and abs(m["cost"]["total"]["cost_usd"] - shard_cost) < 1e-9
    assert m["cost"]["this_run"]["cost_usd"] == 0


def test_shard_and_merge_errors(tmp_path, capsys):
    run_dir = prepared_run(tmp_path, n=2)
    assert main(["distill", "--run-dir", str(run_dir), "--shard", "3/3", "--dry-run"]) == 2
    assert "--shard: Value error, shard 3/3: needs 0 <= I < N" in capsys.readouterr().err
    assert main(["distill", "--run-dir", str(run_dir), "--shard", "first", "--dry-run"]) == 2
    assert "--shard: String should match pattern" in capsys.readouterr().err
    bad = tmp_path / "notes.txt"
    bad.write_text("not a database, just text " * 40)
    assert main(["cache", "merge", str(tmp_path / "m.sqlite"), str(bad)]) == 2
    assert "notes.txt: not a SQLite file" in capsys.readouterr().err
    assert main(["cache", "info", str(tmp_path / "missing.sqlite")]) == 2
    assert "missing.sqlite: no such request store" in capsys.readouterr().err
