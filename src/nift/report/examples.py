"""The report's side-by-side answers, as in the paper's Tables 10-14: the same prompt before and after, each answer
with badges for how it ended, its length, emptiness, loops, echo and IFEval verdict, and the kind of change it shows."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from nift.report import formatting as F
from nift.report.document import Answer, Example, Para, Section, Table
from nift.report.results import BENCH_NAMES
from nift.report.rundir import RunDir, Stage, iter_jsonl

KINDS = [
    "stops by itself now (hit the token limit before)",  # Tables 10, 11, 14
    "answers now (empty before)",  # Table 12
    "follows the instructions now (IFEval)",  # Table 13: engaged before, but wrong
    "repetition gone",  # Table 10's repeated sentence
    "hits the token limit now (stopped by itself before)",
    "empty now (answered before)",
    "fails the instructions now (IFEval)",
    "repetitive now",
    "no change of these kinds",
]


REPETITIVE = 0.3  # share of repeated 4-grams that counts as a loop


def _kinds(b: dict[str, Any], a: dict[str, Any]) -> list[int]:
    sb, sa = b.get("signals") or {}, a.get("signals") or {}
    out = []
    stop_b, stop_a = bool(sb.get("stopped")), bool(sa.get("stopped"))
    empty_b, empty_a = bool(sb.get("empty")), bool(sa.get("empty"))
    ib, ia = (b.get("ifeval") or {}).get("prompt_strict"), (a.get("ifeval") or {}).get("prompt_strict")
    rb, ra = sb.get("repeated_ngram_share", 0.0), sa.get("repeated_ngram_share", 0.0)
    checks = [not stop_b and stop_a, empty_b and not empty_a, ib is False and ia is True,
              rb >= REPETITIVE and ra < REPETITIVE, stop_b and not stop_a, not empty_b and empty_a,
              ib is True and ia is False, rb < REPETITIVE and ra >= REPETITIVE]
    out = [i for i, hit in enumerate(checks) if hit]
    return out or [len(KINDS) - 1]


def _natural(s: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s))


def _segments(text: str, words: Callable[[str], list[str]]) -> list[tuple[str, bool]]:
    """The answer cut into sentences (as the repetition signal cuts them), each marked when it repeats an
    earlier sentence of the same answer (the paper's red highlight)."""
    parts = re.split(r"((?<=[.!?])\s+|\n+)", text)
    seen: set[str] = set()
    out: list[tuple[str, bool]] = []
    for i, p in enumerate(parts):
        if i % 2 == 1:  # separator
            out.append((p, False))
            continue
        norm = " ".join(words(p))
        out.append((p, bool(norm) and norm in seen))
        if norm:
            seen.add(norm)
    return out


def _cut(segments: list[tuple[str, bool]], limit: int) -> tuple[list[tuple[str, bool]], int]:
    total = sum(len(s) for s, _ in segments)
    if total <= limit:
        return segments, 0
    out, used = [], 0
    for s, rep in segments:
        if used + len(s) > limit:
            out.append((s[: limit - used] + " …", rep))
            break
        out.append((s, rep))
        used += len(s)
    return out, total - limit


def _answer(label: str, row: dict[str, Any], limit: int, words) -> Answer:
    s = row.get("signals") or {}
    badges: list[tuple[str, str]] = []
    if s.get("stopped"):
        badges.append(("stopped by itself (EOS)", "good"))
    elif s.get("stop_string") or (row.get("finish_reason") == "stop" and "stopped" not in s):
        badges.append(("cut at the template's stop string", "neutral"))
    else:
        badges.append((f"hit the {F.count(row.get('max_new_tokens'))}-token limit", "bad"))
    badges.append((f"{F.count(row.get('completion_tokens'))} tokens · {F.count(s.get('words'))} words", "neutral"))
    if s.get("empty"):
        badges.append(("empty", "bad"))
    if s.get("repeated_ngram_share", 0) >= REPETITIVE:
        badges.append((f"repeated 4-grams {F.pct(s['repeated_ngram_share'], 0)}", "bad"))
    if s.get("echo"):
        badges.append(("echoes the prompt", "bad"))
    iv = row.get("ifeval")
    if iv:
        ok = sum(iv.get("strict", []))
        badges.append((f"IFEval strict: {ok}/{len(iv.get('strict', []))} instructions followed",
                       "good" if iv.get("prompt_strict") else "bad"))
    badges.append((f"template {row.get('template')}", "neutral"))
    segs, cut = _cut(_segments(row.get("answer") or "", words), limit)
    return Answer(label, segs, badges, cut)


def _load_answers(ev: Stage) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    d = ev.dir / "answers"
    if d.is_dir():
        for p in sorted(d.glob("*.jsonl")):
            for r in iter_jsonl(p):
                if r.get("status") == "ok" and r.get("turn", 0) == 0:
                    out[(r.get("benchmark", p.stem), str(r["id"]))] = r
    return out


def examples(run: RunDir, before: str, after: str, n: int, pinned: list[str], limit: int) -> Section | None:
    if n == 0:
        return None
    done = run.done_evals()
    if before not in done or after not in done:
        return Section("examples", "Example answers", [Para(
            f"Side-by-side answers need both evaluations `{before}` and `{after}`; missing: "
            + ", ".join(x for x in (before, after) if x not in done) + ".", "missing")], missing=True)
    from nift.eval.signals import words

    ab, aa = _load_answers(done[before]), _load_answers(done[after])
    keys = sorted(set(ab) & set(aa), key=lambda k: (k[0], _natural(k[1])))
    if not keys:
        return Section("examples", "Example answers", [Para(
            f"`{before}` and `{after}` share no answered prompt.", "missing")], missing=True)
    kinds = {k: _kinds(ab[k], aa[k]) for k in keys}
    chosen: list[tuple[str, str]] = []
    for p in pinned:
        bench, _, rid = p.rpartition(":")
        for k in keys:
            if k[1] == rid and (not bench or k[0] == bench) and k not in chosen:
                chosen.append(k)
                break
    queues = {i: [k for k in keys if kinds[k][0] == i] for i in range(len(KINDS))}
    while len(chosen) < min(n, len(keys)):
        took = False
        for i in range(len(KINDS)):
            q = [k for k in queues[i] if k not in chosen]
            if q and len(chosen) < n:
                chosen.append(q[0])
                took = True
        if not took:
            break
    counts = [[KINDS[i], F.count(sum(i in kinds[k] for k in keys))] for i in range(len(KINDS))]
    stop_b = sum(bool((ab[k].get("signals") or {}).get("stopped")) for k in keys)
    stop_a = sum(bool((aa[k].get("signals") or {}).get("stopped")) for k in keys)
    blocks: list[Any] = [
        Para(f"The same prompt answered before (`{before}`) and after (`{after}`) fine-tuning, as in the paper's "
             f"Tables 10-14. Of the {F.count(len(keys))} prompts both answered, {F.count(stop_b)} answers stopped by "
             f"themselves (EOS) before and {F.count(stop_a)} after. Shown: {len(chosen)}, picked deterministically — "
             + ("the pinned ones first (`example_ids`), then " if pinned else "")
             + "one of each kind of change in the order of the table below, in benchmark and id order. Sentences "
             "that repeat an earlier sentence of the same answer are highlighted."),
        Table(["kind of change", "prompts"], counts, caption="How the answers changed, over all prompts both "
              "evaluations answered (a prompt can show several kinds)."),
    ]
    for i, k in enumerate(chosen, start=1):
        b, a = ab[k], aa[k]
        q = b.get("question") or ""
        if len(q) > limit:
            q = q[:limit] + f" … ({len(q) - limit:,} more characters)"
        blocks.append(Example(f"Example {i}: {BENCH_NAMES.get(k[0], k[0])} {k[1]}", q,
                              [_answer(f"Before fine-tuning ({before})", b, limit, words),
                               _answer(f"After fine-tuning ({after})", a, limit, words)],
                              "; ".join(KINDS[j] for j in kinds[k])))
    return Section("examples", "Example answers", blocks)

