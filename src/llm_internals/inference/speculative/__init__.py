"""Speculative decoding: a cheap draft proposes tokens, the target verifies them in one forward.

A decode step reads every target weight to produce one token. Speculation lets a cheap source
propose gamma tokens, scores all gamma + 1 positions in ONE target forward, and keeps the
longest prefix that exact rejection sampling accepts (plus one token from the target), so the
output has exactly the target's distribution (Leviathan et al. 2023; Chen et al. 2023).

    rejection.py   verify(p_target, q_draft, draft_tokens) -> Verdict: the accept/reject rule,
                   the residual norm(max(0, p - q)), the bonus token, greedy mode, batches
    proposers.py   DraftModelProposer (a smaller DecoderLM, own KV cache) and NgramProposer
                   (prompt lookup, as vLLM's "ngram" method)
    adaptive.py    gamma fixed, or following the running acceptance rate
    stats.py       SpeculativeStats: proposed, accepted, per-position acceptance, tokens per
                   target forward, and (1 - alpha^(gamma+1)) / (1 - alpha) beside it
    row_cache.py   a contiguous KV cache whose rows advance by different amounts (masked holes)
    config.py      SpeculativeConfig and its checks (one draft source, gamma, the draft fits)
    loop.py        the rounds behind generate(..., draft_model=... | ngram=...)

The proposer protocol (used by loop.py; the paged engine can reuse the proposers):

    proposal = proposer.propose(rows)      rows: list[DraftRow], one per sequence: prompt_ids,
                                           output_ids, gamma (drafts wanted, >= 0; 0 = none),
                                           params (SamplingParams), generator (or None)
    proposal.tokens      (batch, g) int64  row r's drafts in its first num_drafts[r] entries
    proposal.num_drafts  (batch,)          <= the row's gamma (n-gram lookup may find fewer)
    proposal.q           (batch, g, V) the draft distributions after the row's sampling
                         parameters, or None for a deterministic proposer (q one-hot)
    proposer.select_rows(index)            rows that go on (finished sequences leave)

A proposer keeps whatever state it needs per row: DraftModelProposer holds a KV cache of the
tokens it has seen and, at each propose, rolls it back to the longest prefix that is still the
row's text (the accepted tokens), so no explicit rollback call is needed. NgramProposer is
stateless. `deterministic` says whether q is one-hot.
"""
