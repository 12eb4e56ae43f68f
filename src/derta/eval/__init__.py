"""The evaluation suite: models x attacks x judges, helpfulness and over-refusal, resumable.

``run_eval(load_config(EvalConfig, "eval.yaml"))`` writes a run directory (see :mod:`.run`);
:func:`analyse` turns judged rows into the summary that ``derta report`` renders.
"""

from .analyse import SUMMARY_FORMAT, analyse, rate
from .config import EvalConfig, Plan
from .pairwise import PAIRWISE_PROMPT, PAIRWISE_PROMPT_SHA, PairwiseJudge, combine, parse_preference, win_rate
from .run import run_eval
from .scoring import detect_refusal, gsm8k_gold, last_number, mmlu_letter, score_gsm8k, score_mmlu


__all__ = [
    "PAIRWISE_PROMPT", "PAIRWISE_PROMPT_SHA", "SUMMARY_FORMAT", "EvalConfig", "PairwiseJudge", "Plan", "analyse", "combine",
    "detect_refusal", "gsm8k_gold", "last_number", "mmlu_letter", "parse_preference", "rate", "run_eval",
    "score_gsm8k", "score_mmlu", "win_rate",
]
