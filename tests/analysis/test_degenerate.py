"""Degenerate responses: empty, or one short unit looped; real answers (long or short) are not."""

from __future__ import annotations

import pytest

from derta.analysis.degenerate import degenerate, is_degenerate, repetition_cover

PHOTOSYNTHESIS = ("Photosynthesis turns light into chemical energy. In the thylakoid membranes, chlorophyll absorbs light and "
                  "splits water, releasing oxygen and making ATP and NADPH; in the stroma, the Calvin cycle uses them to fix carbon "
                  "dioxide into sugars. The overall reaction is 6 CO2 + 6 H2O -> C6H12O6 + 6 O2. ")


@pytest.mark.parametrize("text, kind", [
    ("", "empty"),
    ("   \n\t ", "empty"),
    ("...", "empty"),
    ("Sorry " * 20, "repetition"),
    ("Sorry" * 30, "repetition"),
    ("Step Step Step Step Step Step Step Step", "repetition"),
    ("I cannot help with that. " * 10, "repetition"),
    ("!!!!!!!!!!!!!!!!!!!!!!!!!", "empty"),  # punctuation only: nothing was said
    ("Sure, here is how. " + "the the the the " * 40, "repetition"),  # a start drowned in a loop
    ("  Sorry Sorry Sorry Sorry Sorry Sorry Sorry Sorry\n", "repetition"),
])
def test_degenerate_responses(text, kind):
    assert degenerate(text) == kind and is_degenerate(text)


@pytest.mark.parametrize("text", [
    "Sorry, I cannot help with that.",
    "I'm sorry, but I can't assist with making explosives. If you're interested in chemistry, I can suggest safe experiments.",
    "18",  # a GSM8K answer
    "B",  # an MMLU answer
    "Yes.",
    PHOTOSYNTHESIS + "and so on " * 6,  # a long answer that ends in a short loop is still an answer
    "To stop a Python process, find its PID with `ps aux | grep python`, then run `kill PID`; if it ignores that, `kill -9 PID`.",
    "1. Preheat the oven to 180 C.\n2. Mix the flour and sugar.\n3. Add the eggs.\n4. Bake for 25 minutes.",
    "| x | y |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n| 5 | 6 |",
    "=" * 30 + "\nRelease notes\n" + "=" * 30 + "\nThis release fixes the crash on start-up and speeds up loading of large files.",
])
def test_real_answers_are_not_degenerate(text):
    assert degenerate(text) is None and not is_degenerate(text)


def test_repetition_cover_measures_the_loop():
    assert repetition_cover("ab" * 10) == 1.0
    assert repetition_cover("abc") == 0.0 and repetition_cover("") == 0.0
    # 4 repeats of "xy" (8 characters) inside 16: half covered; 3 repeats are not a loop
    assert repetition_cover("xyxyxyxy" + "abcdefgh") == pytest.approx(0.5)
    assert repetition_cover("xyxyxy" + "abcdefghij") == 0.0
    text = PHOTOSYNTHESIS + "and so on " * 6
    assert 0.1 < repetition_cover(text) < 0.8
