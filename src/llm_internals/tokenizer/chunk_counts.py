"""Training input to chunk counts: one text, a file or folder, or an iterable of documents.

BPE training needs only how often each pre-tokenized chunk occurs, so the input is streamed
into a Counter and never held twice (no list of all chunks, no copy of a file):

- a str is one document: the same counts as pre-tokenizing the whole string at once;
- an os.PathLike (a UTF-8 file, or a folder whose .txt files are read in sorted order) is one
  document too, the same as `train_bpe(corpus(path))`, read in blocks of about 1 MB;
- any other iterable of str: each item is its own document, pre-tokenized separately (as HF
  `tokenizers`' `train_from_iterator` does): `train_bpe(open(path))` cuts at every line.

Special-token strings are cut out of each document first, so no merge learns a piece of one.

Safe cuts. To stream one long document, it is cut into pieces where the named patterns always
end a chunk, so pre-tokenizing the pieces one by one gives the whole text's chunks:
- gpt2: before a "\\n" that is followed by a non-space. The whitespace run W that ends in that
  "\\n" is cut by the whole-text pattern into W[:-1] (`\\s+(?!\\S)` backs off one character)
  and "\\n" (`\\s+`); a piece that ends in W[:-1] ends in the same chunk, and a piece that
  starts with "\\nY" starts with the same "\\n".
- gpt4: after a "\\n" that is followed by a non-space: `\\s*[\\r\\n]` (or a symbol run's
  `[\\r\\n]*+`) ends there in the whole text, as `\\s++$` does at the end of a piece.
Neither pattern looks behind, so matching restarts at a cut exactly as at a string's start.
With special tokens, gpt2 does not cut before a "\n" that a special token follows (that segment
ends at the "\n" and keeps its run whole), and a block's last `len(longest special)`
characters wait for the next block, so a special token is always seen whole.
Custom patterns get no cuts (a document is pre-tokenized whole), nor do special tokens that
contain a newline. Small pieces are also faster: mostly-ASCII lines take the `re` fast path and
non-ASCII lines are matched in their compact one- or two-byte form (see docs/benchmarks.md).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable
from itertools import chain
from pathlib import Path

import regex

from llm_internals.data.corpus import iter_text_blocks
from llm_internals.errors import LLMInternalsError
from llm_internals.tokenizer.pretokenize import GPT2_PATTERN, GPT4_PATTERN, get_pretokenizer

# `re`'s \S (not str.isspace()) excludes every Unicode White_Space character that `regex`'s \s
# matches (and \x1c-\x1f besides), so it only ever finds fewer cuts than the proofs allow.
SAFE_CUTS = {GPT2_PATTERN: r"(?=\n\S)", GPT4_PATTERN: r"(?<=\n)(?=\S)"}
BLOCK_CHARS = 1 << 20  # streaming unit: characters of a str, bytes of a file

TrainingText = str | os.PathLike | Iterable[str]


class ChunkCounter:
    """Counts of pre-tokenized chunks, fed document by document."""

    def __init__(self, pattern: str = "gpt2", special_tokens: Iterable[str] = ()) -> None:
        self.pretokenizer = get_pretokenizer(pattern)
        self.counts: Counter[str] = Counter()
        specials = sorted(special_tokens, key=len, reverse=True)
        self.specials = (
            regex.compile("|".join(regex.escape(s) for s in specials)) if specials else None
        )
        self.longest_special = len(specials[0]) if specials else 0
        cut = SAFE_CUTS.get(self.pretokenizer.pattern)
        if cut is None or any("\n" in s for s in specials):
            self.cut = None
        elif self.specials is not None and self.pretokenizer.pattern == GPT2_PATTERN:
            # A special right after the "\n" ends the segment there, where gpt2 keeps the
            # "\n" with the run before it: no cut.
            alternatives = "|".join(re.escape(s) for s in specials)
            self.cut = re.compile(f"{cut}(?!\\n(?:{alternatives}))")
        else:
            self.cut = re.compile(cut)

    def add_document(self, text: str) -> None:
        """Count one whole document given as one string."""
        if len(text) <= BLOCK_CHARS:
            self._count(text)
        else:
            self.add_stream(text[i : i + BLOCK_CHARS] for i in range(0, len(text), BLOCK_CHARS))

    def add_stream(self, blocks: Iterable[str]) -> None:
        """Count one document given as consecutive blocks (any split; safe cuts decide)."""
        if self.cut is None:
            self._count("".join(blocks))
            return
        carry = ""
        waiting: list[str] = []  # blocks without a newline: no cut can fall inside them
        for block in blocks:
            if "\n" not in block and not carry.endswith("\n"):
                waiting.append(block)  # joined once a newline comes: no quadratic copying
                continue
            pieces = self.cut.split("".join([carry, *waiting, block]))
            waiting.clear()
            # Keep the tail uncounted: the next block may continue its last chunk, or complete
            # a special token that starts within the last `longest_special` characters.
            k = len(pieces) - 1
            tail = len(pieces[k])
            while k > 0 and tail <= self.longest_special:
                k -= 1
                tail += len(pieces[k])
            carry = "".join(pieces[k:])
            self._count_pieces(pieces[:k])
        self._count_pieces(["".join([carry, *waiting])])

    def _count(self, text: str) -> None:
        self._count_pieces(self.cut.split(text) if self.cut is not None else [text])

    def _count_pieces(self, pieces: list[str]) -> None:
        if self.specials is not None:
            pieces = [segment for piece in pieces for segment in self.specials.split(piece)]
        self.counts.update(chain.from_iterable(map(self.pretokenizer.split, pieces)))


def count_chunks(
    source: TrainingText, pattern: str = "gpt2", special_tokens: Iterable[str] = ()
) -> Counter[str]:
    """How often each pre-tokenized chunk occurs in `source` (see the module docstring)."""
    counter = ChunkCounter(pattern, special_tokens)
    if isinstance(source, str):
        counter.add_document(source)
    elif isinstance(source, os.PathLike):
        counter.add_stream(iter_text_blocks(Path(source), BLOCK_CHARS))
    elif isinstance(source, bytes | bytearray) or not isinstance(source, Iterable):
        raise LLMInternalsError(
            f"cannot train on a {type(source).__name__}: give a str (the text), a path "
            "(a UTF-8 file or a folder of .txt files) or an iterable of str (documents)",
            hint="on the command line pass --corpus NAME_OR_PATH",
        )
    else:
        for i, document in enumerate(source):
            if not isinstance(document, str):
                raise LLMInternalsError(
                    f"training document {i} is a {type(document).__name__}, not a str",
                    hint="decode bytes to str first (UTF-8), or pass the file's path",
                )
            counter.add_document(document)
    return counter.counts
