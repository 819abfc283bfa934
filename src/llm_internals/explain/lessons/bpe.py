"""Lesson "bpe": what tokenization is, how byte-level BPE learns merges and applies them.

Every merge, pair count and encoding step shown comes from the library: the readable reference
trainer (`tokenizer.naive.train_bpe_naive`, which records its pair counts before each merge),
the Tokenizer's encoder (which records each merge it applies) and the fast trainer on the real
corpus for the compression figures.
"""

from __future__ import annotations

import functools

from llm_internals.explain.inputs import LessonInput
from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.lesson_corpus import lesson_corpus
from llm_internals.explain.registry import LessonInfo
from llm_internals.tokenizer import (
    Tokenizer,
    split_text,
    tokenizer_from_trained,
    train_bpe,
    train_bpe_naive,
)
from llm_internals.tokenizer.chunk_counts import count_chunks
from llm_internals.tokenizer.stats import show_token
from llm_internals.tokenizer.training_common import byte_symbol_order
from llm_internals.trace import recording

INFO = LessonInfo(
    name="bpe",
    title="Byte-pair encoding: from text to token ids",
    summary="Characters vs words vs subwords, how BPE learns merges from pair counts, how it "
    "encodes new text, and why byte-level BPE is what modern LLMs use.",
)

TINY_CORPUS = "low lower lowest newer newest low lower newer newest newest"
N_MERGES = 8
UNSEEN = " lowers"
SENTENCE = "The tokenizer's job: 12 words, 3 emoji 🙂, no surprises!"
REAL_VOCAB_SIZES = (256, 1024, 8192)
TOP_PAIRS = 6
INPUTS = (
    LessonInput("text", "text to encode", UNSEEN, kind="str", max_length=40,
                help="encoded with the tiny tokenizer (a leading space is part of the text)"),
    LessonInput("merges", "merges to learn", N_MERGES, minimum=1, maximum=20,
                help="training stops early when no pair is left (14 for the tiny corpus)"),
)  # fmt: skip


def _pieces(tok: Tokenizer, ids: list[int]) -> str:
    return " | ".join(show_token(tok.token_bytes(i)) for i in ids)


def trained_tiny(merges: int = N_MERGES) -> tuple[Tokenizer, list]:
    """The tiny corpus trained with the reference trainer; returns the records per merge."""
    with recording() as rec:
        trained = train_bpe_naive(TINY_CORPUS, 256 + merges)
    steps = list(
        zip(rec.all("bpe.pair_counts"), rec.all("bpe.merge"), rec.all("bpe.chunks"), strict=True)
    )
    return tokenizer_from_trained(trained), steps


def _section_what_is_tokenization(tok: Tokenizer, text: str = UNSEEN) -> Section:
    train_words = sorted(set(TINY_CORPUS.split()))
    unseen_word = text.strip() or text
    ids = tok.encode(text)
    return Section(
        "What is tokenization",
        [
            Step(
                "A model reads integers, not text. A tokenizer cuts text into pieces from a fixed "
                "vocabulary and gives each piece an id. Characters make a tiny vocabulary but "
                "long sequences; whole words make short sequences but need a huge vocabulary.",
                values={
                    "text": unseen_word,
                    "characters": " | ".join(unseen_word),
                    "number of characters": len(unseen_word),
                },
            ),
            Step(
                "A word-level vocabulary built from the training text has no entry for a word it "
                "never saw: the out-of-vocabulary problem. It must map it to one 'unknown' token "
                "(often written UNK) and lose what the word was.",
                values={
                    "word vocabulary from the corpus": ", ".join(train_words),
                    f"is {unseen_word!r} in it?": unseen_word in train_words,
                    "word-level result": "UNK",
                },
            ),
            Step(
                "Subword tokenization (BPE) keeps frequent words whole and spells rare ones from "
                "smaller known pieces; with bytes as the smallest pieces nothing is ever unknown.",
                values={"BPE pieces": _pieces(tok, ids), "BPE ids": str(ids)},
            ),
        ],
    )


def _section_the_problem() -> Section:
    chunks = split_text(SENTENCE, "gpt2")
    return Section(
        "The problem of breaking text into tokens",
        [
            Step(
                "Before any merging, a regular expression cuts the text into chunks (GPT-2's "
                "pattern: words with their leading space, numbers, punctuation runs, "
                "whitespace). Tokens never cross a chunk boundary, so ' dog' is one token in "
                "'dog.' and 'dog!' alike instead of many near-duplicates.",
                formula="GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"
                "|\\s+(?!\\S)|\\s+",
                values={
                    "text": SENTENCE,
                    "chunks": " | ".join(show_token(c.encode("utf-8")) for c in chunks),
                    "number of chunks": len(chunks),
                    "UTF-8 bytes": len(SENTENCE.encode("utf-8")),
                },
            ),
            Step(
                "Inside each chunk the question is which pieces to use. Fewer, longer pieces mean "
                "shorter sequences (cheaper attention, more text per context window) but a "
                "bigger embedding table. BPE answers it from data: merge what occurs most often.",
            ),
        ],
    )


def _section_what_is_bpe() -> Section:
    counts = count_chunks(TINY_CORPUS, "gpt2")
    rows = [
        [show_token(chunk.encode()), n, " ".join(str(b) for b in chunk.encode())]
        for chunk, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return Section(
        "What BPE is",
        [
            Step(
                "Byte-pair encoding starts with the 256 byte values as tokens and repeatedly "
                "adds one new token: the concatenation of the most frequent adjacent pair. The "
                "list of merges, in order, is the tokenizer. Training counts each distinct chunk "
                "once, with its frequency.",
                values={
                    "corpus": TINY_CORPUS,
                    "distinct chunks": Table(["chunk", "count", "byte ids"], rows),
                },
            )
        ],
    )


def _section_training_steps(tok: Tokenizer, steps: list) -> Section:
    order = byte_symbol_order()

    def tie_key(pair: tuple[int, int]) -> tuple[int, int]:
        return tuple(order[t] if t < 256 else t for t in pair)  # type: ignore[return-value]

    out = []
    for n, (pair_counts, (left, right, new_id, count), chunks) in enumerate(steps):
        ranked = sorted(pair_counts.items(), key=lambda kv: (-kv[1], tie_key(kv[0])))[:TOP_PAIRS]
        tied = sum(1 for c in pair_counts.values() if c == count) - 1
        table = Table(
            ["pair", "count"],
            [[f"{show_token(tok.token_bytes(a))} + {show_token(tok.token_bytes(b))}", c]
             for (a, b), c in ranked],
        )  # fmt: skip
        after = [_pieces(tok, ids) for ids, _ in chunks]
        out.append(
            Step(
                f"Merge {n + 1}: the most frequent pair is "
                f"{show_token(tok.token_bytes(left))!r} + {show_token(tok.token_bytes(right))!r} "
                f"({count} times); it becomes token {new_id}."
                + (
                    f" {tied} other pair(s) also occur {count} times: the tie goes to the "
                    "smallest pair in HF's symbol order (printable bytes first), exactly as "
                    "HF tokenizers decides."
                    if tied
                    else ""
                ),
                values={
                    "pair counts before the merge (top)": table,
                    "new token": f"{new_id} = {show_token(tok.token_bytes(new_id))}",
                    "chunks after": " ; ".join(after),
                },
            )
        )
    return Section("How BPE works step by step", out)


def _section_encoding_new_text(tok: Tokenizer, text: str = UNSEEN) -> Section:
    with recording() as rec:
        ids = tok.encode_ordinary(text)
    rows = [
        [
            n + 1,
            f"{show_token(tok.token_bytes(s['pair'][0]))} + "
            f"{show_token(tok.token_bytes(s['pair'][1]))}",
            s["rank"],
            _pieces(tok, s["after"]),
        ]
        for n, s in enumerate(rec.all("bpe.encode_step"))
    ]
    return Section(
        "How BPE tokenizes new text",
        [
            Step(
                f"To encode {text!r}"
                + (", which never occurred in training," if text == UNSEEN else "")
                + " start from its bytes and "
                "repeatedly apply the merge with the lowest rank (learned earliest) among the "
                "adjacent pairs, until no adjacent pair is a known merge.",
                values={
                    "bytes": str(list(text.encode("utf-8"))),
                    "merges applied": Table(["step", "pair", "rank", "tokens after"], rows),
                    "final ids": str(ids),
                },
            )
        ],
    )


@functools.cache  # three tokenizers trained on 5 MB (seconds); no input changes it
def _section_why_bpe() -> Section:
    text = lesson_corpus(INFO.name)
    n_bytes = len(text.encode("utf-8"))
    rows = []
    for vocab_size in REAL_VOCAB_SIZES:
        tok = train_bpe(text, vocab_size, special_tokens=())
        n_tokens = len(tok.encode_ordinary(text))
        rows.append([vocab_size, len(tok.merges), n_tokens, n_bytes / n_tokens])
    emoji_tok = train_bpe(TINY_CORPUS, 256 + N_MERGES, special_tokens=())
    emoji_ids = emoji_tok.encode("naïve 🙂 東京")
    return Section(
        "Why modern LLMs use it",
        [
            Step(
                "Byte-level: any string is a byte string, and every byte is a token, so there is "
                "no unknown token. Text the tokenizer never saw (accents, emoji, Japanese) still "
                "encodes, just into more, shorter pieces, and decodes back exactly.",
                values={
                    "text": "naïve 🙂 東京",
                    "ids (tiny vocabulary)": str(emoji_ids),
                    "decoded": emoji_tok.decode(emoji_ids),
                },
            ),
            Step(
                "Compression on the real corpus (Shakespeare, 5 MB): more merges, fewer tokens "
                "per byte. Vocabulary 256 is plain bytes (1.0 byte per token).",
                values={
                    "corpus bytes": n_bytes,
                    "compression": Table(
                        ["vocab size", "merges", "tokens", "bytes per token"], rows
                    ),
                },
                decimals=3,
            ),
        ],
    )


def build(text: str = UNSEEN, merges: int = N_MERGES) -> Lesson:
    tok, steps = trained_tiny(merges)
    return Lesson(
        name=INFO.name,
        title=INFO.title,
        summary=INFO.summary,
        sections=[
            _section_what_is_tokenization(tok, text),
            _section_the_problem(),
            _section_what_is_bpe(),
            _section_training_steps(tok, steps),
            _section_encoding_new_text(tok, text),
            _section_why_bpe(),
        ],
    )
