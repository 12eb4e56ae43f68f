"""Data of the real-model demo: real harmful pairs, rule-written refusals, self-distilled helpfulness.

- **Triples**: the harmful side is real: the 264 instruction -> harmful response pairs of the DeRTa
  repository (``derta-train``). The safe side is written here by rules: a refusal (or, for the
  rebuttal style, a rebuttal) whose first word is the RTO transition word chosen for the tokenizer,
  varied in wording, with a reason that follows what the request is about.
- **Helpfulness**: derta's own benign instructions (never the evaluation sets), answered by the
  untuned model itself (self-distillation keeps its behaviour).
- **Checkable questions** for helpfulness: capitals, arithmetic and facts with one right answer.
"""

from __future__ import annotations

import random
import re

from ..records import Triple

# -- refusals -------------------------------------------------------------------------------------

#: (pattern over the request, why it is harmful); the first match wins.
REASONS: tuple[tuple[str, str], ...] = (
    (r"\b(bomb|explosive|weapon|gun|kill|murder|shoot|poison|attack|terror)", "it could get people hurt or killed"),
    (r"\b(hack|malware|virus|ransomware|phish|exploit|password|botnet|ddos|keylogger|spyware)", "it would be used to break into systems that belong to other people"),
    (r"\b(drug|meth|cocaine|heroin|opioid|narcotic)", "it would help make or sell dangerous drugs"),
    (r"\b(steal|theft|fraud|scam|launder|counterfeit|forge|embezzl|tax evasion|insider)", "it would cheat or rob real people"),
    (r"\b(racis|sexis|discriminat|hate|harass|bully|stalk|threat|blackmail|extort)", "it would target and hurt real people"),
    (r"\b(fake news|misinformation|disinformation|propaganda|conspiracy|manipulat|deceiv|mislead)", "it would spread lies that mislead people"),
    (r"\b(suicide|self-harm|self harm|starv|anorexi)", "it could put someone's life at risk"),
    (r"\b(child|minor|kidnap|traffick)", "it could put vulnerable people in danger"),
)
DEFAULT_REASON = "it could cause real harm to other people"

REFUSALS = (
    "{w}, I can't help with that, because {reason}.",
    "{w}, I won't continue with this. It is not something I can assist with, because {reason}.",
    "{w}, I have to stop here: {reason}, so I will not provide it.",
    "{w}, I cannot provide this information, because {reason}.",
    "{w}, this is not a request I can help with, since {reason}.",
    "{w}, I'm not able to help with this, because {reason}. If you want, I can help with something safe instead.",
)
REBUTTALS = (
    "{w}, I will not do this. You are asking me to {ask}, and that is harmful, because {reason}.",
    "{w}, no. This request is to {ask}. That is wrong, because {reason}, and I will not help with it.",
    "{w}, I refuse: helping to {ask} is harmful, because {reason}.",
)


def reason_for(query: str) -> str:
    q = query.lower()
    for pattern, reason in REASONS:
        if re.search(pattern, q):
            return reason
    return DEFAULT_REASON


def _ask(query: str, words: int = 14) -> str:
    """The request restated in a few words: 'write a script that ...' from 'Write a script that ...'."""
    first = re.split(r"(?<=[.?!])\s", query.strip(), maxsplit=1)[0].rstrip(".?!")
    toks = first.split()
    text = " ".join(toks[:words]) + (" ..." if len(toks) > words else "")
    return text[:1].lower() + text[1:]


def refusal(query: str, word: str, rng: random.Random) -> str:
    return rng.choice(REFUSALS).format(w=word, reason=reason_for(query))


def rebuttal(query: str, word: str, rng: random.Random) -> str:
    return rng.choice(REBUTTALS).format(w=word, ask=_ask(query), reason=reason_for(query))


def parse_pair(row: dict, where: str) -> tuple[str, str]:
    """(instruction, harmful response) of a ``derta-train`` row ``{prefix, text}``; the prefix is
    read as :func:`derta.data.formats.load_harmful_pairs` reads it."""
    from ..data.formats import alpaca_instruction

    prefix, text = row.get("prefix"), row.get("text")
    if not isinstance(prefix, str) or not isinstance(text, str):
        raise ValueError(f"{where}: expected string fields 'prefix' and 'text'")
    q = alpaca_instruction(prefix)
    if not q or not text.strip():
        raise ValueError(f"{where}: empty instruction or response")
    return q, text.strip()


def make_triples(pairs: list[tuple[str, str]], word: str, seed: int = 0) -> list[Triple]:
    """Triples with a rule-written refusal and rebuttal, both opening with ``word``."""
    rng = random.Random(seed)
    return [Triple(query=q, safe_response=refusal(q, word, rng), harmful_response=h, rebuttal_response=rebuttal(q, word, rng),
                   id=f"derta-train-{i}", category=reason_for(q)) for i, (q, h) in enumerate(pairs)]


# -- benign instructions for self-distillation (derta's own; not from any evaluation set) -----------

_TIPS = ("studying for an exam", "sleeping better", "saving money each month", "learning a new language", "staying focused at work",
         "keeping a houseplant alive", "running a first 5k", "writing a cover letter", "organizing a small desk", "making new friends",
         "packing for a weekend trip", "reducing food waste", "taking better photos with a phone", "preparing for a job interview",
         "starting a vegetable garden", "drinking more water", "keeping a kitchen clean", "reading more books", "planning a birthday party",
         "training a puppy")
_EXPLAIN = ("photosynthesis", "gravity", "a rainbow", "inflation", "the water cycle", "a volcano", "democracy", "an atom",
            "a computer program", "recycling", "how vaccines work", "the phases of the moon", "an ecosystem", "the internet",
            "a solar eclipse", "compound interest", "evaporation", "the seasons", "a budget", "renewable energy")
_POEM = ("the ocean", "autumn leaves", "a sleepy cat", "the morning sun", "friendship", "a rainy day", "the mountains", "a library",
         "the first snow", "a summer garden")
_HOWTO = ("boil an egg", "make a cup of tea", "plant tomato seeds", "clean a keyboard", "write a thank-you note", "fold a paper airplane",
          "make a simple salad", "change a light bulb", "back up files on a computer", "set up a weekly schedule", "wash a wool sweater",
          "make pancakes", "tie a square knot", "care for a goldfish", "stretch after a run")
_BENEFITS = ("walking every day", "reading before bed", "learning to cook", "keeping a journal", "riding a bike to work",
             "spending time outdoors", "learning to play an instrument", "volunteering")
_COMPARE = (("a cat", "a dog"), ("tea", "coffee"), ("a laptop", "a desktop computer"), ("trains", "planes"), ("summer", "winter"))


def benign_instructions() -> list[str]:
    """Benign instructions whose answers the untuned model writes itself (self-distillation)."""
    out = [f"Give me three tips for {t}." for t in _TIPS]
    out += [f"Explain {c} in simple words." for c in _EXPLAIN]
    out += [f"Write a short poem about {p}." for p in _POEM]
    out += [f"How do I {h}?" for h in _HOWTO]
    out += [f"What are the benefits of {b}?" for b in _BENEFITS]
    out += [f"What is the difference between {a} and {b}?" for a, b in _COMPARE]
    return out


# -- helpfulness questions with one right answer ------------------------------------------------------

_CAPITALS = (("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Spain", "Madrid"),
             ("England", "London"), ("Russia", "Moscow"), ("China", "Beijing"), ("Egypt", "Cairo"), ("Canada", "Ottawa"),
             ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Norway", "Oslo"),
             ("Sweden", "Stockholm"), ("Poland", "Warsaw"), ("Thailand", "Bangkok"), ("Kenya", "Nairobi"), ("Peru", "Lima"))
_FACTS = (("How many days are in a week?", "7|seven"), ("How many legs does a spider have?", "8|eight"),
          ("What is the largest planet in the solar system?", "Jupiter"), ("What color is the sky on a clear day?", "blue"),
          ("What is the freezing point of water in degrees Celsius?", "0|zero"), ("Who wrote Romeo and Juliet?", "Shakespeare"),
          ("What planet do we live on?", "Earth"), ("How many continents are there on Earth?", "7|seven"),
          ("What is the chemical symbol for water?", "H2O"), ("How many hours are in a day?", "24|twenty-four"),
          ("What is the opposite of hot?", "cold"), ("Which animal is known as the king of the jungle?", "lion"),
          ("What do bees make?", "honey"), ("How many months are in a year?", "12|twelve"),
          ("What is the closest star to the Earth?", "Sun"), ("What color are ripe bananas?", "yellow"),
          ("What is the boiling point of water in degrees Celsius?", "100|one hundred"), ("How many sides does a triangle have?", "3|three"),
          ("What is the largest ocean on Earth?", "Pacific"), ("Which gas do humans need to breathe to live?", "oxygen"))


def checkable_questions(seed: int = 0, arithmetic: int = 20) -> list[dict]:
    """Questions with one right answer (``answer``: alternatives separated by "|")."""
    rng = random.Random(seed)
    rows = [{"id": f"capital-{c.lower()}", "question": f"What is the capital of {c}?", "answer": a, "kind": "capital"} for c, a in _CAPITALS]
    rows += [{"id": f"fact-{i}", "question": q, "answer": a, "kind": "fact"} for i, (q, a) in enumerate(_FACTS)]
    seen: set[tuple[int, int]] = set()
    while len(seen) < arithmetic:
        seen.add((rng.randint(2, 20), rng.randint(2, 20)))
    rows += [{"id": f"add-{a}-{b}", "question": f"What is {a} plus {b}?", "answer": str(a + b), "kind": "arithmetic"} for a, b in sorted(seen)]
    return rows
