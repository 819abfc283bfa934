"""Incremental detokenization and stop conditions, with tokenizers trained live (HF tokenizers):
a byte-level BPE that splits characters across tokens, and a SentencePiece-style (Metaspace) one
whose decoder drops the leading space of each decode call."""

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tokenizers.implementations import ByteLevelBPETokenizer

from llm_internals.inference.stopping import IncrementalDetokenizer, StopChecker, StopReason

TRAINING_TEXT = [
    "the end of the day is near, and the cafe serves naive crepes ###STOP more text",
    "stop words: STOP, halt, END. the end. the day. ##",
] * 20


@pytest.fixture(scope="module")
def byte_level():
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(
        TRAINING_TEXT, vocab_size=320, min_frequency=2, show_progress=False
    )
    return tokenizer


@pytest.fixture(scope="module")
def metaspace():
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>"], show_progress=False)
    tokenizer.train_from_iterator(TRAINING_TEXT, trainer)
    return tokenizer


def stream(tokenizer, ids, prompt_ids=()):
    detok = IncrementalDetokenizer(tokenizer.decode, prompt_ids)
    pieces = [detok.push(i) for i in ids]
    return pieces, detok.flush()


def test_multibyte_characters_split_over_tokens_come_out_whole(byte_level):
    text = "Hi café, naïve 😀 and 日本語!"
    ids = byte_level.encode(text).ids
    # The test is meaningful only if some token is an incomplete character on its own.
    assert any("\ufffd" in byte_level.decode([i]) for i in ids)
    pieces, rest = stream(byte_level, ids)
    assert "".join(pieces) == text and rest == ""
    assert all("\ufffd" not in piece for piece in pieces)
    assert "" in pieces  # held back while the character was incomplete


def test_incomplete_character_at_the_end_is_flushed(byte_level):
    ids = byte_level.encode("ok 😀").ids
    pieces, rest = stream(byte_level, ids[:-1])  # cut inside the emoji's bytes
    assert "".join(pieces) + rest == byte_level.decode(ids[:-1])
    assert rest.endswith("\ufffd") and all("\ufffd" not in piece for piece in pieces)


def test_leading_spaces_survive_with_a_metaspace_decoder(metaspace):
    prompt = metaspace.encode("the end").ids
    output = metaspace.encode("of the day").ids
    naive = "".join(metaspace.decode([i]) for i in output)
    full = metaspace.decode(prompt + output)
    expected = full[len(metaspace.decode(prompt)) :]
    assert naive != expected  # decoding token by token loses the spaces
    pieces, rest = stream(metaspace, output, prompt_ids=prompt)
    assert "".join(pieces) + rest == expected == " of the day"


def run_checker(tokenizer, text, checker):
    """Feed the tokens of `text` one at a time; return (streamed chunks, tokens consumed)."""
    ids = tokenizer.encode(text).ids
    detok = IncrementalDetokenizer(tokenizer.decode)
    chunks = []
    for used, token_id in enumerate(ids, start=1):
        stopped = checker.update(token_id, detok.push(token_id))
        chunks.append(checker.take_ready_text(final=stopped))
        assert checker.text.startswith("".join(chunks))  # nothing streamed is ever taken back
        if stopped:
            return chunks, used, ids
    chunks.append(checker.take_ready_text(final=True))
    return chunks, len(ids), ids


def test_stop_string_spanning_tokens_cuts_the_text_before_it(byte_level):
    text = "the end of the day###STOP more text"
    stop_at = text.index("###STOP")
    encoding = byte_level.encode(text)
    spanning = [s for s, e in encoding.offsets if s < stop_at + 7 and e > stop_at]
    assert len(spanning) >= 2, "the stop string must cross a token boundary for this test"
    checker = StopChecker(stop=["###STOP"])
    chunks, used, ids = run_checker(byte_level, text, checker)
    assert checker.reason == StopReason("stop_string", "###STOP")
    assert checker.text == "the end of the day" == "".join(chunks)
    assert used < len(ids)  # stopped as soon as the string was complete
    assert byte_level.decode(ids[:used]).endswith("###STOP")
    assert "#" not in "".join(chunks)  # the partial "#", "##" were held back, never streamed


def test_text_that_only_looks_like_a_stop_prefix_is_released(byte_level):
    checker = StopChecker(stop=["###STOP"])
    chunks, _, _ = run_checker(byte_level, "stop words: STOP, halt ## END", checker)
    assert checker.reason is None
    assert "".join(chunks) == "stop words: STOP, halt ## END"


def test_earliest_stop_string_wins_and_stop_tokens_end_without_text():
    checker = StopChecker(stop=["END", "the"])
    assert not checker.update(1, "go to ")
    assert checker.update(2, "the END")
    assert checker.reason == StopReason("stop_string", "the") and checker.text == "go to "
    assert checker.update(3, "more")  # stays stopped
    tokens = StopChecker(stop_token_ids=[0])
    assert not tokens.update(5, "hello")
    assert tokens.update(0, "<eos>")
    assert tokens.reason == StopReason("stop_token", 0) and tokens.text == "hello"


def test_held_back_text_is_the_longest_possible_stop_prefix():
    checker = StopChecker(stop=["abc", "xyz"])
    checker.update(1, "hello ab")
    assert checker.held_back() == 2 and checker.take_ready_text() == "hello "
    checker.update(2, "d x")
    assert checker.take_ready_text() == "abd "
    assert checker.take_ready_text(final=True) == "x"
