"""The model card (README.md) written beside a merged model: provenance and verification."""

from __future__ import annotations

import json
from typing import Any

from nift import __version__
from nift.merge.plan import MergePlan


def _md_cell(value: Any) -> str:
    return str(value).replace("|", r"\|").replace("\n", " ")


def model_card(plan: MergePlan, stats: dict[str, Any]) -> str:
    meta = plan.meta or {}
    lora = meta.get("lora") or {}
    adapter_base = meta.get("base_model") or (plan.adapter.config.get("base_model_name_or_path")
                                              if plan.adapter else None)
    rows = [("method", plan.method), ("target (weights merged into)", plan.target_ref)]
    if str(plan.target.folder) != plan.target_ref:
        rows.append(("target folder", str(plan.target.folder)))
    if plan.adapter is not None:
        rows += [("adapter", str(plan.adapter_dir)), ("adapter sha256", stats["adapter_sha256"]),
                 ("adapter trained on (base)", adapter_base or "unknown"),
                 ("λ on the LoRA delta (--adapter-scale)", plan.adapter_scale)]
    if plan.chat:
        rows += [("chat vector", f"{plan.instruct_ref} − {plan.base_ref}"),
                 ("λ on the chat vector (--chat-vector-scale)", plan.chat_scale)]
    rows += [("data manifest hash", meta.get("data_manifest_hash", "n/a (no nift_train.json)")),
             ("dtype", f"{stats['dtype']['output']} (target: {stats['dtype']['target']})"),
             ("nift", __version__)]
    if meta:
        rows += [("training template", meta.get("template")), ("EOS appended in training", meta.get("eos_token")),
                 ("training method", meta.get("method")),
                 ("LoRA", f"r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}, "
                          f"targets={lora.get('target_modules')}"),
                 ("hyperparameters", json.dumps(meta.get("hyperparameters") or {}, sort_keys=True))]
    v = stats.get("verification") or {}
    if v.get("passed"):
        check = (f"passed: relative logit error {v['rel_error']:.2e} <= {v['tolerance']:.0e} against "
                 f"{v['reference']} on {v['prompts']} prompts ({v['positions']} positions), top-1 agreement "
                 f"{v['top1_agreement']:.3f}")
    else:
        check = f"not run: {v.get('skipped', 'disabled')}"
    if v.get("note"):
        check += f" Note: {v['note']}"
    tags = list(dict.fromkeys(["nift", "merge", plan.method] + (["lora"] if plan.adapter is not None else [])))
    # demo models record where they came from: the hub id is what `base_model` means on the Hugging Face hub
    demo = plan.target.folder / "nift_model.json"
    origin = json.loads(demo.read_text(encoding="utf-8")) if demo.is_file() else {}
    front = ["---", f"base_model: {json.dumps(str(origin.get('upstream') or plan.target_ref))}",
             "library_name: transformers", "tags:", *[f"- {t}" for t in tags], "---", ""]
    if origin:
        licence = (f"\n## Licence\n\nThe weights derive from {origin.get('upstream')}: {origin.get('licence')}. "
                   f"Source: {origin.get('source')}.\n")
    else:
        licence = ("\n## Licence\n\nThat of the target model (and of whatever the adapter's training data and "
                   "teacher require); nift records no licence for it.\n")
    notes = [*plan.warnings, *(v for k, v in (stats.get("files") or {}).items() if k != "copied")]
    notes_md = ("\n## Notes\n\n" + "\n".join(f"- {n}" for n in notes) + "\n") if notes else ""
    table = "\n".join(f"| {k} | {_md_cell(val)} |" for k, val in rows)
    what = {
        "lora": "the LoRA adapter merged into the model it was trained on",
        "lora-base": "a LoRA adapter trained on a base model, merged into another model with the same architecture "
                     "and vocabulary (its instruct sibling): the adapter acts like a chat vector",
        "chat-vector": "task arithmetic: target + λ·(instruct − base)"
                       + (", plus a LoRA adapter" if plan.adapter is not None else ""),
    }[plan.method]
    return "\n".join(front) + f"""# Merged by nift ({plan.method})

This model is {what}, made by `nift merge` (non-instructional fine-tuning): merged shard by shard, deltas
computed in float32, weights written in {stats['dtype']['output']}.

| | |
|---|---|
{table}

**Verification:** {check}.
{notes_md}{licence}
## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")
tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")
```
"""


