"""The report's training and merge sections: the loss curve with the learning rate, the student's set-up and the
examples it saw, and how the adapter was merged and verified."""

from __future__ import annotations

from typing import Any

from nift.report import charts
from nift.report import formatting as F
from nift.report.document import Card, Figure, Para, Section, Table
from nift.report.rundir import RunDir, iter_jsonl
from nift.report.sections import missing, short


def final_losses(rows: list[dict[str, Any]]) -> dict[str, Any]:
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r and "step" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r and "step" in r]
    summary = next((r for r in reversed(rows) if "train_loss" in r), {})
    return {"train": train, "eval": evals, "final_train": train[-1][1] if train else None,
            "first_train": train[0][1] if train else None, "final_eval": evals[-1][1] if evals else None,
            "mean_train": summary.get("train_loss"), "steps": train[-1][0] if train else None}


def _examples_cell(st: dict[str, Any], cfg: dict[str, Any]) -> str:
    """How many examples were trained, and how EOS was set: a teacher output cut at max_tokens did not end, so it is
    trained without EOS or dropped (train.cut_at_max_tokens)."""
    ex = st.get("examples") or {}
    skipped = st.get("skipped") or {}
    n = ex.get("train") if isinstance(ex, dict) else ex
    parts = [f"{F.count(n)} trained" + (f", {F.count(ex.get('eval'))} held out" if isinstance(ex, dict) else "")]
    if st.get("without_eos") is not None:
        parts.append(f"{F.count(st['without_eos'])} cut at the teacher's max_tokens trained without EOS")
    if skipped.get("cut_at_max_tokens"):
        parts.append(f"{F.count(skipped['cut_at_max_tokens'])} cut at max_tokens dropped")
    other = {k: v for k, v in skipped.items() if k != "cut_at_max_tokens" and v}
    if other:
        parts.append("skipped: " + ", ".join(f"{k.replace('_', ' ')} {F.count(v)}" for k, v in sorted(other.items())))
    return "; ".join(parts) + (f" (cut_at_max_tokens: {cfg['cut_at_max_tokens']})"
                               if cfg.get("cut_at_max_tokens") else "")


def training(run: RunDir) -> tuple[Section, list[Card]]:
    t = run.done("train")
    if t is None:
        return Section("training", "Training", [missing(run, "train", "the loss curve")], missing=True), []
    cfg, st = t.config, t.stats
    log_path = t.dir / "log.jsonl"
    rows = list(iter_jsonl(log_path)) if log_path.is_file() else []
    L = final_losses(rows)
    blocks: list[Any] = []
    lora = f", LoRA r {cfg.get('lora_r')} α {cfg.get('lora_alpha')} on {short(cfg.get('lora_target_modules'))}" \
        if cfg.get("method") in ("lora", "qlora") else ""
    blocks.append(Table(["setting", "value"], [
        ["student", f"`{cfg.get('model')}`"], ["method", f"{cfg.get('method')}{lora}"],
        ["template", str(cfg.get("template"))], ["training data", f"`{cfg.get('data')}`"],
        ["examples", _examples_cell(st, cfg)],
        ["optimizer steps", F.count(st.get("steps"))],
        ["effective batch", f"{F.count(st.get('effective_batch'))} sequences ({F.count(st.get('world_size'))} "
                            f"process(es), {st.get('precision')}, packing {'on' if st.get('packing') else 'off'})"],
        ["learning rate", f"{F.num(cfg.get('lr'))} ({cfg.get('lr_scheduler')})"],
        ["tokens seen", F.count(st.get("tokens_seen"))],
        ["first logged train loss", F.num(L["first_train"])],
        ["final logged train loss", F.num(L["final_train"])],
        ["mean train loss (whole run)", F.num(L["mean_train"] if L["mean_train"] is not None
                                              else st.get("train_loss"))],
        ["final held-out eval loss", F.num(L["final_eval"] if L["final_eval"] is not None else st.get("eval_loss"))
         if (L["final_eval"] is not None or st.get("eval_loss") is not None) else "not measured (eval_fraction 0)"],
        ["device", str(st.get("device"))], ["resumed from", str(st.get("resumed_from") or "no (one go)")],
    ], align="ll", header=False))
    if L["train"] or L["eval"]:
        lrs = [(r["step"], r["learning_rate"]) for r in rows if "learning_rate" in r and "step" in r]
        png = charts.loss_curve(L["train"], L["eval"], lrs,
                                f"{cfg.get('model')} · {cfg.get('method')} · {cfg.get('data')}")
        blocks.append(Figure("loss.png", png, "training loss curve",
                             "Loss per logged optimizer step (from train/log.jsonl), held-out loss where measured, "
                             "learning rate on the right axis."))
    elif (t.dir / "loss.png").is_file():
        blocks.append(Figure("loss.png", (t.dir / "loss.png").read_bytes(), "training loss curve",
                             "train/loss.png (train/log.jsonl is missing)."))
    else:
        blocks.append(Para("train/log.jsonl holds no logged step: no loss curve.", "note"))
    cards = []
    if L["final_train"] is not None:
        cards.append(Card("final train loss", F.num(L["final_train"]),
                          f"from {F.num(L['first_train'])} at step 1; {F.count(L['steps'])} steps"))
    return Section("training", "Training", blocks), cards


def merge(run: RunDir) -> Section | None:
    m = run.stages.get("merge")
    if m is None:
        return None  # optional: eval can read the train folder directly
    if not m.done:
        return Section("merge", "Merge", [missing(run, "merge", "the merged model")], missing=True)
    st = m.stats
    v = st.get("verification") or {}
    if v.get("passed") is None:
        verdict = f"not verified ({v.get('skipped', 'skipped')})"
    else:
        verdict = (f"{'passed' if v.get('passed') else 'FAILED'}: relative logit error {F.num(v.get('rel_error'), 3)} "
                   f"(tolerance {F.num(v.get('tolerance'), 3)}), top-1 agreement {F.pct(v.get('top1_agreement'))} "
                   f"over {F.count(v.get('positions'))} positions of {F.count(v.get('prompts'))} prompts, against "
                   f"{v.get('reference', 'the unmerged model')}")
    mg = st.get("merge") or {}
    tensors = mg.get("tensors") or {}
    rows = [["method", str(st.get("method"))], ["target", f"`{st.get('target')}`"],
            ["adapter", f"`{st.get('adapter')}` (scale {st.get('adapter_scale')})" if st.get("adapter") else F.DASH],
            ["weights", f"{(st.get('dtype') or {}).get('output')}, {F.nbytes(mg.get('bytes_written'))} in "
                        f"{F.count(mg.get('shards'))} shard(s); tensors: "
                        + ", ".join(f"{k} {F.count(n)}" for k, n in tensors.items())],
            ["verification", verdict], ["output", f"`{m.dir / 'model'}`"]]
    if st.get("instruct"):
        rows.insert(2, ["instruct", f"`{st.get('instruct')}`"])
    blocks: list[Any] = [Table(["setting", "value"], rows, align="ll", header=False)]
    for w in st.get("warnings") or []:
        blocks.append(Para(w, "note"))
    return Section("merge", "Merge", blocks)

