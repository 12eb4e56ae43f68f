"""derta's benchmark: ratios measured side by side in one run.

    python benchmarks/run.py --quick --json OUT.json     # a few minutes on 2 cores
    python benchmarks/run.py --full --json OUT.json      # more rounds, rows and tokens
    python benchmarks/run.py --smoke --json OUT.json     # tiny sizes, one round: checks the script runs

Every ratio compares arms measured in the same interleaved rounds (A, B, A, B, ...) on one torch
thread (``--threads``); the JSON holds ``machine``, ``ratios.{name}.{median,min,max,rounds}``
(``"not available"`` with a ``reason`` when an arm cannot run here) and ``rates`` (figures of one
arm, same keys). The arms are described in bench_train.py, bench_generate.py, bench_memory.py
and bench_judge.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from bench_timing import interleaved, is_valid_entry, machine, ratio, summary, unavailable

REPO = Path(__file__).resolve().parents[1]

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(triples=4, vocab=1024, hidden=32, layers=2, rounds=1, warmup=False, gen_prompts=8, new_tokens=4, judge_items=40,
                  memory_vocab=(1024, 4096), memory_tokens=256, memory_hidden=16, child=False, trl=False, demo_rows=64),
    "quick": dict(triples=16, vocab=8192, hidden=128, layers=4, rounds=3, warmup=True, gen_prompts=64, new_tokens=32, judge_items=1000,
                  memory_vocab=(32768, 131072), memory_tokens=2048, memory_hidden=64, child=True, trl=True, demo_rows=None),
    "full": dict(triples=48, vocab=8192, hidden=128, layers=4, rounds=7, warmup=True, gen_prompts=64, new_tokens=64, judge_items=3000,
                 memory_vocab=(32768, 131072), memory_tokens=4096, memory_hidden=64, child=True, trl=True, demo_rows=None),
}

#: name -> (numerator arm, denominator arm, what it says); training ratios are effective tokens/s.
TRAIN_RATIOS = {
    "train_vs_padmax": ("derta", "padmax", "derta trainer (defaults) vs every row padded to max_length"),
    "train_vs_reference": ("derta", "reference", "vs the reference's batching: DataCollatorForSeq2Seq, batch 16, pad_to_multiple_of 8"),
    "train_vs_trl_packed": ("derta", "trl_packed", "vs TRL SFTTrainer with packing (bfd) on the same rows"),
    "derta_vs_sft": ("derta", "sft", "the DeRTa objective vs the model's own loss on the same batches"),
    "train_padding_free_vs_padded": ("derta", "padded", "padding_free (default) vs padding_free: false"),
    "train_bfd_vs_default": ("bfd", "derta", "packing: bfd vs the defaults"),
    "train_grouped_vs_padded": ("grouped", "padded", "group_by_length vs random batches, both padded"),
    "train_chunked_loss_vs_full_logits": ("derta", "full_logits", "loss_chunk_size (default) vs full logits"),
}
GEN_RATIOS = {
    "gen_batched_vs_single": ("batched", "single", "HF backend defaults, 64 prompts in one call vs one prompt at a time"),
    "gen_token_budget_vs_count": ("budget", "count", "batches by token budget (<= 64 rows) vs fixed batches of 8, same peak batch tokens"),
}
GOALS = {"train_vs_padmax": 2.5, "train_vs_reference": 1.5, "derta_vs_sft": 0.97, "gen_batched_vs_single": 5.0,
         "judge_responses_per_s": 100.0, "keyword_judge_responses_per_s": 5000.0}


def train_section(p: dict[str, Any], w: Any, tmp: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    from bench_train import TrainArms
    from bench_workload import make_model

    arms = TrainArms(w, make_model(w.tokenizer, p["hidden"], p["layers"]), tmp)
    fns = arms.arms()
    if not p["trl"]:
        from bench_timing import Unavailable

        def skipped(warm: bool = False) -> float:
            raise Unavailable("skipped in --smoke (TRL's import and dataset packing alone take longer than the smoke budget)")

        fns["trl_packed"] = skipped
    values, errors = interleaved(fns, p["rounds"], p["warmup"])
    ratios = {name: ratio(values, errors, a, b, what=what) for name, (a, b, what) in TRAIN_RATIOS.items()}
    rates = {f"train_tokens_per_s_{arm}": summary(v) if v else unavailable(errors.get(arm, "not measured")) for arm, v in values.items()}
    info = {"rows": len(arms.rows), "real_tokens": arms.real_tokens, "batch_size": arms.batch_size, "max_length": arms.max_length,
            "padding_efficiency": {arm: round(arms.real_tokens / n, 3) for arm, n in arms.computed.items()}}
    return ratios, rates, info


DEMO_RATIOS = {
    "demo_train_vs_full_logits": ("demo", "full_logits", "make demo's training (the toy's rows and model, seed 0, base corpus + DeRTa data, batch 32): "
                                  "its settings (padding-free, chunked loss) vs the same + full logits"),
    "demo_train_vs_padded": ("demo", "padded", "its padding-free batches (a micro-batch's rows packed into sequences of at most "
                             "max_length tokens) vs padded batches of the same rows, both with the chunked loss"),
}


def demo_section(p: dict[str, Any], tmp: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """`make demo`'s own training workload: the speed-up its training stages get from the defaults."""
    import random
    from types import SimpleNamespace

    from bench_train import TrainArms

    from derta.demo.model import tiny_llama, train_tokenizer
    from derta.demo.run import DemoConfig, base_examples, safety_examples, world_texts
    from derta.demo.world import make_world

    cfg = DemoConfig(progress=False)
    w = make_world(0)
    tok = train_tokenizer(world_texts(w), vocab_size=cfg.vocab_size)
    examples = base_examples(w) + safety_examples(w, "derta", cfg)
    if p["demo_rows"]:
        examples = random.Random(0).sample(examples, p["demo_rows"])
    arms = TrainArms(SimpleNamespace(tokenizer=tok, examples=examples), tiny_llama(tok, hidden=cfg.hidden, layers=cfg.layers, seed=0),
                     tmp, batch_size=cfg.batch_size, max_length=160)
    fns = {"demo": arms.arm("demo", arms.derta(padding_free=cfg.padding_free, group_by_length=cfg.group_by_length, loss_chunk_size=cfg.loss_chunk_size)),
           "full_logits": arms.arm("full_logits", arms.derta(padding_free=cfg.padding_free, group_by_length=cfg.group_by_length, loss_chunk_size=None)),
           "padded": arms.arm("padded", arms.derta(padding_free=False, loss_chunk_size=cfg.loss_chunk_size))}
    values, errors = interleaved(fns, p["rounds"], p["warmup"])
    ratios = {name: ratio(values, errors, a, b, what=what) for name, (a, b, what) in DEMO_RATIOS.items()}
    info = {"rows": len(arms.rows), "real_tokens": arms.real_tokens, "batch_size": cfg.batch_size,
            "padding_efficiency": {arm: round(arms.real_tokens / n, 3) for arm, n in arms.computed.items()}}
    return ratios, info


def gen_section(p: dict[str, Any], w: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    from bench_generate import chat_prompts, generation_arms
    from bench_workload import make_model

    model = make_model(w.tokenizer, p["hidden"], p["layers"])
    fns, info = generation_arms(model, w.tokenizer, chat_prompts(w.prompts, p["gen_prompts"]), p["new_tokens"])
    values, errors = interleaved(fns, p["rounds"], p["warmup"])
    ratios = {name: ratio(values, errors, a, b, what=what) for name, (a, b, what) in GEN_RATIOS.items()}
    rates = {f"gen_prompts_per_s_{arm}": summary(v) if v else unavailable(errors.get(arm, "not measured")) for arm, v in values.items()}
    return ratios, rates, info


def judge_section(p: dict[str, Any], data: str | None) -> tuple[dict[str, Any], str]:
    from bench_judge import judge_arms, judge_items
    from bench_workload import data_root

    items, source = judge_items(p["judge_items"], data_root(data))
    values, errors = interleaved(judge_arms(items), p["rounds"], p["warmup"])
    rates = {}
    for arm, key in (("default", "judge_responses_per_s"), ("keyword", "keyword_judge_responses_per_s")):
        rates[key] = summary(values[arm], source=source) if values[arm] else unavailable(errors.get(arm, "not measured"))
    return rates, source


def memory_section(p: dict[str, Any], w: Any, tmp: Path, threads: int, full: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    from bench_memory import measure, measure_in_child, pick_rows
    from bench_train import rendered_rows, train_config

    rows = pick_rows(rendered_rows(train_config(tmp, 4, 1024), w), p["memory_tokens"])
    paths = ("derta", "builtin", "full_logits") if full else ("derta", "builtin")
    peaks: dict[str, dict[str, Any]] = {}
    ratios: dict[str, Any] = {}
    for vocab in p["memory_vocab"]:
        tag = f"{vocab // 1024}k"
        got: dict[str, Any] = {}
        for path in paths:
            payload = {"workload": w, "rows": rows, "path": path, "vocab": vocab, "hidden": p["memory_hidden"], "max_length": 1024}
            try:
                got[path] = measure_in_child(payload, tmp, threads) if p["child"] else measure(payload)
            except Exception as e:  # reported, never fatal to the rest of the benchmark
                got[path] = {"error": f"{type(e).__name__}: {e}"}
        peaks[f"V={vocab}"] = {k: (round(v["peak_bytes"] / 2**20, 1) if "peak_bytes" in v else v["error"]) for k, v in got.items()}
        peaks[f"V={vocab}"]["method"] = next((v["method"] for v in got.values() if "method" in v), None)
        for other in paths[1:]:
            name = f"loss_memory_{other}_over_derta_{tag}"
            a, b = got.get(other, {}), got.get("derta", {})
            if "peak_bytes" in a and "peak_bytes" in b and b["peak_bytes"] > 0 and a["peak_bytes"] > 0:
                ratios[name] = summary([a["peak_bytes"] / b["peak_bytes"]], what=f"peak memory of the {other} loss step / derta's, V = {vocab}, {p['memory_tokens']} tokens")
            else:
                ratios[name] = unavailable(str(a.get("error") or b.get("error") or "a peak of 0 bytes was measured"))
    return ratios, {"tokens": p["memory_tokens"], "hidden": p["memory_hidden"], "peak_mib": peaks}


def demo_split(demo_dir: Path) -> dict[str, Any]:
    """The stage split of the latest ``make demo`` run in ``demo_dir``, from its own records."""
    summary_file = demo_dir / "summary.json"
    how = f"run `make demo` (output in {demo_dir}), then this benchmark again: it reads the seconds the demo records"
    if not summary_file.is_file():
        return {"reason": f"no demo run in {demo_dir}: {how}"}
    total = json.loads(summary_file.read_text()).get("seconds")
    stages = {}
    for rec in sorted(demo_dir.glob("models/*/final/derta_run.json")):
        d = json.loads(rec.read_text())
        if isinstance(d.get("seconds"), (int, float)):
            stages[d.get("stage") or rec.parent.parent.name] = d["seconds"]
    if not total or not stages:
        return {"reason": f"{demo_dir} records no stage seconds: {how}"}
    train = sum(stages.values())
    return {"source": str(summary_file), "note": "read from the demo's records, not timed by this run", "total_seconds": total,
            "training_share": round(train / total, 3), "stage_shares": {k: round(v / total, 3) for k, v in stages.items()},
            "generation_and_judging_share": round(1 - train / total, 3)}


def print_table(result: dict[str, Any]) -> None:
    def fmt(x: Any) -> str:
        return f"{x:.3g}" if isinstance(x, (int, float)) else str(x)

    print(f"\n{'name':42} {'median':>9} {'min':>8} {'max':>8} {'rounds':>6}  goal")
    for section in ("ratios", "rates"):
        for name, e in result[section].items():
            if name.startswith(("train_tokens_per_s", "gen_prompts_per_s")):
                continue
            goal = GOALS.get(name)
            met = "" if goal is None or not isinstance(e["median"], float) else (" (met)" if e["median"] >= goal else " (not met)")
            tail = f">= {goal:g}{met}" if goal else ""
            if e["median"] == "not available":
                tail = e["reason"][:90]
            print(f"{name:42} {fmt(e['median']):>9} {fmt(e['min']):>8} {fmt(e['max']):>8} {e['rounds']:>6}  {tail}")


def markdown(result: dict[str, Any]) -> str:
    """The ratios as the README's table: median (min–max over rounds), rounds, goal."""
    m = result["machine"]
    lines = ["| ratio | median (min–max) | rounds | goal |", "| --- | --- | --- | --- |"]
    for name, e in result["ratios"].items():
        goal = f"≥ {GOALS[name]:g}" if name in GOALS else ""
        if e["median"] == "not available":
            lines.append(f"| `{name}` | not available: {e['reason']} | 0 | {goal} |")
        else:
            lines.append(f"| `{name}` | {e['median']:.2f} ({e['min']:.2f}–{e['max']:.2f}) | {e['rounds']} | {goal} |")
    lines.append("")
    lines.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch thread(s), {m['device']}; torch {m['torch']}, "
                 f"transformers {m['transformers']}, trl {m['trl']}; {m['date']}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="profile", help="the default: a few minutes on 2 cores")
    size.add_argument("--full", action="store_const", const="full", dest="profile", help="more rounds, rows and tokens")
    size.add_argument("--smoke", action="store_const", const="smoke", dest="profile", help="tiny sizes, one round (the test)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", help="also write the ratios as a markdown table (the README's) here")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--data-dir", help="the shared data directory (default: $DERTA_DATA or ../shared/data)")
    ap.add_argument("--demo-dir", default=str(REPO / "runs" / "demo"), help="a `make demo` output to read the stage split from")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("derta").setLevel(logging.ERROR)
    from transformers import logging as hf_logging

    hf_logging.set_verbosity_error()
    if args.memory_child:
        from bench_memory import child_main

        return child_main(args.memory_child)

    from bench_workload import make_workload

    name = args.profile or "quick"
    p = PROFILES[name]
    result: dict[str, Any] = {"machine": machine(args.threads), "profile": name, "ratios": {}, "rates": {}}
    clock = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(stage: str) -> None:
        nonlocal clock
        seconds[stage] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    w = make_workload(p["triples"], p["vocab"], args.data_dir)
    result["workload"] = {"source": w.source, "examples": len(w.examples), "model": {"hidden": p["hidden"], "layers": p["layers"], "vocab": len(w.tokenizer)}}
    lap("setup")
    with tempfile.TemporaryDirectory(prefix="derta-bench-") as tmp:
        ratios, rates, info = train_section(p, w, Path(tmp))
        lap("train")
        result["ratios"].update(ratios)
        result["rates"].update(rates)
        result["workload"]["train"] = info
        ratios, info = demo_section(p, Path(tmp))
        result["ratios"].update(ratios)
        result["workload"]["demo_train"] = info
        lap("demo_train")
        ratios, rates, info = gen_section(p, w)
        result["ratios"].update(ratios)
        result["rates"].update(rates)
        result["workload"]["generation"] = info
        lap("generation")
        ratios, memory = memory_section(p, w, Path(tmp), args.threads, full=name == "full")
        result["ratios"].update(ratios)
        result["memory"] = memory
        lap("memory")
    rates, source = judge_section(p, args.data_dir)
    lap("judge")
    result["rates"].update(rates)
    result["workload"]["judge_source"] = source
    result["demo_stage_split"] = demo_split(Path(args.demo_dir))
    result["seconds"] = seconds
    bad = [k for s in ("ratios", "rates") for k, e in result[s].items() if not is_valid_entry(e)]
    if bad:
        raise AssertionError(f"malformed entries: {bad}")
    print_table(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(markdown(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
