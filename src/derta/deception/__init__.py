"""Reason-based deception (SPEC §4): scenarios, chain-of-thought protocol, classification,
multi-turn refusal-vs-rebuttal conversations (the assistant's own inserted turn, or the
user/overseer answering the model's undesired first answer), rebuttal templates and the report.

    suite = load_suite()                                  # the built-in scenarios (or a file)
    records = run_multiturn(backend, suite, "out/conversations.jsonl", Protocol())
    rows = classify_turns(records, suite, OfflineClassifier(), "out/classifications.jsonl")

or, from a config, ``run_study(DeceptionConfig(...))`` / ``derta deception run CONFIG.yaml``.
"""

from .classify import (
    CATEGORIES,
    DECEPTION_JUDGE_PROMPT,
    DECEPTION_JUDGE_PROMPT_SHA,
    STANCES,
    Classification,
    LlmClassifier,
    absent_reasoning,
    OfflineClassifier,
    categorise,
    decide,
    get_classifier,
    parse_verdicts,
    rates,
    stance_of,
)
from .multiturn import DEFAULT_REFUSAL, STRATEGIES, VARIANTS, Protocol, TurnRecord, conversation, read_turns, run_multiturn
from .protocol import Parsed, format_answer, instruction, opening_messages, parse_answer, protocol_sha
from .rebuttal import OVERSEER_TEMPLATES, TEMPLATES, RebuttalTemplate, describe_request, load_overseer_template, load_template
from .scenarios import Detect, RebuttalFields, Scenario, Suite, load_suite, pairs
from .study import DeceptionConfig, classify_turns, run_study, summarise

__all__ = [
    "CATEGORIES", "DECEPTION_JUDGE_PROMPT", "DECEPTION_JUDGE_PROMPT_SHA", "DEFAULT_REFUSAL", "OVERSEER_TEMPLATES", "STANCES", "STRATEGIES",
    "TEMPLATES", "VARIANTS", "absent_reasoning", "format_answer", "load_overseer_template",
    "Classification", "DeceptionConfig", "Detect", "LlmClassifier", "OfflineClassifier", "Parsed", "Protocol", "RebuttalFields",
    "RebuttalTemplate", "Scenario", "Suite", "TurnRecord", "categorise", "classify_turns", "conversation", "decide",
    "describe_request", "get_classifier", "instruction", "load_suite", "load_template", "opening_messages", "pairs",
    "parse_answer", "parse_verdicts", "protocol_sha", "rates", "read_turns", "run_multiturn", "run_study", "stance_of", "summarise",
]
