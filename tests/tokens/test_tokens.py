"""The refusal token is looked up by string in each tokenizer, never hard-coded."""

from __future__ import annotations

import pytest

from derta.tokens import TokenLookupError, eos_text, refusal_token_id, single_token_id, vocab_token_id

NOT_A_TOKEN = "Xylophonequux"


@pytest.fixture(scope="module")
def unigram_with_sorry(world):
    """A Unigram/Metaspace tokenizer trained with enough refusal text that "▁Sorry" is one piece.

    (The conftest one, trained on the world alone at the same vocabulary size, splits it.)
    """
    from derta.demo.model import train_tokenizer

    texts = [c.get("query") or c.get("text", "") for c in world.base_corpus] + [c.get("response", "") for c in world.base_corpus]
    texts += [t.safe_response for t in world.triples]
    texts += ["Sorry, but no. Sorry again."] * 300
    return train_tokenizer(texts, vocab_size=1000, kind="unigram")


def test_bpe_refusal_is_the_spaced_word(bpe_tokenizer):
    tid = refusal_token_id(bpe_tokenizer)
    # The in-response form (after a space) comes first: that is where nearly all RTO positions are.
    assert tid == bpe_tokenizer.get_vocab()["ĠSorry"]
    assert bpe_tokenizer.convert_ids_to_tokens(tid) == "ĠSorry"
    assert bpe_tokenizer.decode([tid]) == " Sorry"
    assert tid != bpe_tokenizer.get_vocab()["Sorry"]


def test_unigram_refusal_is_the_metaspace_piece(unigram_with_sorry):
    tok = unigram_with_sorry
    tid = refusal_token_id(tok)
    assert tok.convert_ids_to_tokens(tid) == "▁Sorry"
    assert tid == tok.get_vocab()["▁Sorry"]
    assert tok.decode([tid]).strip() == "Sorry"
    # In the middle of a response the word encodes to this very id.
    ids = tok("here is how. Sorry, I cannot", add_special_tokens=False)["input_ids"]
    assert tid in ids


def test_word_split_into_pieces_is_a_clear_error(bpe_tokenizer, unigram_with_sorry, unigram_tokenizer):
    for tok in (bpe_tokenizer, unigram_with_sorry):
        assert single_token_id(tok, " " + NOT_A_TOKEN) is None
        with pytest.raises(TokenLookupError) as e:
            refusal_token_id(tok, word=NOT_A_TOKEN)
        msg = str(e.value)
        assert NOT_A_TOKEN in msg and "not a single token" in msg
        assert "--refusal-word" in msg and "--refusal-token" in msg  # says how to choose another
    # The conftest unigram tokenizer splits "Sorry" itself: the error shows the pieces.
    pieces = unigram_tokenizer.convert_ids_to_tokens(unigram_tokenizer(" Sorry", add_special_tokens=False)["input_ids"])
    if len(pieces) > 1:
        with pytest.raises(TokenLookupError, match="not a single token") as e:
            refusal_token_id(unigram_tokenizer)
        assert str(pieces) in str(e.value)


def test_other_words_and_whitespace(bpe_tokenizer):
    tok = bpe_tokenizer
    assert refusal_token_id(tok, word="  Sorry ") == refusal_token_id(tok)
    # "I" is a single token in both forms; " I" wins.
    assert refusal_token_id(tok, word="I") == tok.get_vocab()["ĠI"]
    with pytest.raises(TokenLookupError, match="empty"):
        refusal_token_id(tok, word="  ")


def test_token_override_wins(bpe_tokenizer, unigram_with_sorry):
    tok = bpe_tokenizer
    bare = tok.get_vocab()["Sorry"]
    assert refusal_token_id(tok, token="Sorry") == bare
    assert refusal_token_id(tok, word=NOT_A_TOKEN, token="ĠSorry") == tok.get_vocab()["ĠSorry"]
    assert vocab_token_id(unigram_with_sorry, "▁Sorry") == refusal_token_id(unigram_with_sorry)


def test_unknown_vocab_entry_is_a_clear_error(bpe_tokenizer, unigram_with_sorry):
    with pytest.raises(TokenLookupError, match="not in the tokenizer's vocabulary") as e:
        refusal_token_id(bpe_tokenizer, token="ĠApologies")
    assert "'ĠApologies'" in str(e.value)
    # The message lists look-alike entries to choose from.
    with pytest.raises(TokenLookupError) as e:
        refusal_token_id(unigram_with_sorry, token="ĠSorry")  # a byte-level entry; Metaspace has "▁Sorry"
    assert "▁Sorry" in str(e.value)


def test_eos_text(bpe_tokenizer):
    import copy

    assert eos_text(bpe_tokenizer) == "<|end|>"
    tok = copy.deepcopy(bpe_tokenizer)
    tok.eos_token = None
    with pytest.raises(TokenLookupError, match="no eos_token"):
        eos_text(tok)
