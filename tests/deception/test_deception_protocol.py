"""The chain-of-thought protocol: the prompt it builds and its parser, on literal strings."""

from __future__ import annotations

import pytest

from derta.deception.protocol import instruction, opening_messages, parse_answer, protocol_sha


def test_tagged_answer():
    r, f, notes = parse_answer("<reasoning>This would be illegal.</reasoning>\n<final>DECISION: A - INTERVIEW</final>")
    assert (r, f, notes) == ("This would be illegal.", "DECISION: A - INTERVIEW", [])


def test_case_and_spaces_in_tags():
    r, f, _ = parse_answer("<Reasoning>why</REASONING><FINAL>what</Final>")
    assert (r, f) == ("why", "what")
    r, f, _ = parse_answer("< reasoning >why</ reasoning >< final >what</ final >")
    assert (r, f) == ("why", "what")


def test_missing_reasoning_is_none():
    r, f, notes = parse_answer("<final>DECISION: A - REJECT</final>")
    assert r is None and f == "DECISION: A - REJECT" and notes == []


def test_missing_final_is_none():
    r, f, notes = parse_answer("<reasoning>I need to think about this.</reasoning>")
    assert r == "I need to think about this." and f is None
    assert "no final part found" in notes


def test_empty_final_is_none():
    r, f, notes = parse_answer("<reasoning>a b c</reasoning><final>  </final>")
    assert r == "a b c" and f is None and "the <final> part is empty" in notes


def test_wrong_order():
    r, f, notes = parse_answer("<final>X</final>\n<reasoning>Because.</reasoning>")
    assert (r, f) == ("Because.", "X")
    assert "final part comes before the reasoning" in notes


def test_extra_text_is_ignored_and_noted():
    r, f, notes = parse_answer("Sure, here you go.\n<reasoning>r</reasoning>\n<final>f</final>\nHope this helps!")
    assert (r, f) == ("r", "f")
    assert any(n.startswith("text outside the tags ignored") for n in notes)


def test_untagged_text_after_reasoning_is_the_final():
    r, f, notes = parse_answer("<reasoning>It is fine.</reasoning>\nDECISION: A - REJECT")
    assert (r, f) == ("It is fine.", "DECISION: A - REJECT")
    assert any("text after the reasoning is taken as the final" in n for n in notes)


def test_untagged_text_before_final_is_the_reasoning():
    r, f, notes = parse_answer("Let me weigh this up first.\n<final>OK</final>")
    assert (r, f) == ("Let me weigh this up first.", "OK")
    assert any("text before <final> is taken as the reasoning" in n for n in notes)


def test_unclosed_tags():
    r, f, notes = parse_answer("<reasoning>thinking... <final>DECISION: A - REJECT")
    assert (r, f) == ("thinking...", "DECISION: A - REJECT")
    assert "unclosed <reasoning> (ended at the next tag)" in notes and "unclosed <final> (runs to the end)" in notes


def test_think_tags_count_as_reasoning():
    r, f, notes = parse_answer("<think>The manager is asking for discrimination.</think>\n<final>No.</final>")
    assert (r, f) == ("The manager is asking for discrimination.", "No.")
    assert any("<think>" in n for n in notes)
    # Both: the thinking block and the asked-for reasoning are joined.
    r, f, notes = parse_answer("<think>private</think><reasoning>public</reasoning><final>x</final>")
    assert r == "private\n\npublic" and f == "x"


def test_closing_think_without_opening():
    # Templates that open <think> in the prompt: the model's text starts inside the block.
    r, f, notes = parse_answer("Hmm, this is unethical.</think>\n\nI won't do that.")
    assert (r, f) == ("Hmm, this is unethical.", "I won't do that.")
    assert any("</think> without an opening tag" in n for n in notes)


def test_several_finals_last_wins():
    _, f, notes = parse_answer("<reasoning>r</reasoning><final>draft</final><final>real</final>")
    assert f == "real" and any("the last one is used" in n for n in notes)


def test_plain_text_fallback():
    r, f, notes = parse_answer("Reasoning: Rejecting her for that is unfair.\nFinal answer: DECISION: A - INTERVIEW")
    assert (r, f) == ("Rejecting her for that is unfair.", "DECISION: A - INTERVIEW")
    r, f, notes = parse_answer("**Final Answer:** X\n\n**Reasoning:** because")
    assert (r, f) == ("because", "X") and "final part comes before the reasoning" in notes
    r, f, notes = parse_answer("I weighed it up. FINAL ANSWER: go")
    assert (r, f) == ("I weighed it up.", "go")


def test_no_structure_and_empty():
    assert parse_answer("DECISION: A - REJECT")[:2] == (None, None)
    assert parse_answer("DECISION: A - REJECT").notes[0].startswith("no reasoning or final part found")
    assert parse_answer("") == (None, None, ["empty answer"])
    assert parse_answer(None) == (None, None, ["empty answer"])


def test_opening_messages_and_instruction():
    msgs = opening_messages("You are X.", "Do Y.", "tags")
    assert [m.role for m in msgs] == ["system", "user"]
    assert msgs[0].content.startswith("You are X.") and "<reasoning>" in msgs[0].content and "<final>" in msgs[0].content
    assert msgs[1].content == "Do Y."
    merged = opening_messages("You are X.", "Do Y.", "plain", system_role=False)
    assert [m.role for m in merged] == ["user"] and "Final answer:" in merged[0].content and merged[0].content.endswith("Do Y.")
    assert protocol_sha("tags") != protocol_sha("plain") and len(protocol_sha()) == 16
    with pytest.raises(ValueError, match="unknown answer format"):
        instruction("json")
