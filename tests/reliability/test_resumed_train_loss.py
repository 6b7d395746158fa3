"""A resumed `nift train` reports the train_loss of an uninterrupted one (issue 13, item 6): the steps between the
last log and a checkpoint used to be summed in memory only, so a resumed run's mean left them out (7.7958 against
7.7311 with bit-identical adapters)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nift.artifacts import read_manifest
from nift.cli import main

# checkpoints every 4 steps, logs every 5: a checkpoint falls between two logs
ARGS = ["--lr", "1e-2", "--max-steps", "7", "--per-device-batch-size", "4", "--grad-accum", "1",
        "--logging-steps", "5", "--save-steps", "4", "--no-progress", "--precision", "fp32", "--eval-fraction", "0"]


@pytest.fixture(scope="module")
def tiny(smollm2, tmp_path_factory) -> str:
    from helpers.models import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2)


def test_logged_at_every_checkpoint():
    from transformers import TrainerControl, TrainerState

    from nift.train.trainer import callbacks

    cb = callbacks(Path("unused.jsonl"))[-1]
    control = TrainerControl(should_save=True)
    cb.on_step_end(None, TrainerState(), control)
    assert control.should_log


@pytest.mark.slow  # two tiny trainings, about 35 s here; the fast test above checks the mechanism
def test_resumed_run_reports_the_uninterrupted_train_loss(tiny, tmp_path: Path, capsys, monkeypatch):
    from transformers import TrainerCallback

    from nift.train import stage

    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps({"id": f"t{i}", "prompt": f"Note {i}: the sky is",
                                        "completion": " blue, and the grass is green."}) + "\n" for i in range(16)))
    straight, killed = tmp_path / "straight", tmp_path / "killed"

    class Snapshot(TrainerCallback):
        """What a kill right after checkpoint-4 leaves on disk: the stage folder as it is then."""

        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 4:
                shutil.copytree(straight, killed)

    real = stage.callbacks
    monkeypatch.setattr(stage, "callbacks", lambda path: [*real(path), Snapshot()])
    assert main(["train", "--run-dir", str(straight), "--model", tiny, "--data", str(data), *ARGS]) == 0
    monkeypatch.setattr(stage, "callbacks", real)
    assert read_manifest(killed / "train") is None and (killed / "train" / "checkpoints" / "checkpoint-4").is_dir()
    capsys.readouterr()
    assert main(["train", "--run-dir", str(killed), "--model", tiny, "--data", str(data), *ARGS]) == 0
    assert "resuming from" in capsys.readouterr().out
    a, b = read_manifest(killed / "train")["stats"], read_manifest(straight / "train")["stats"]
    assert "checkpoint-4" in a["resumed_from"]
    assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
