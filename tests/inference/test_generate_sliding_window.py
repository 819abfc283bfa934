"""`generate` past the context (issue 11 §3): with sliding_window=True every token after the
context fills equals running the model directly on the last max_seq_len tokens (nanoGPT's crop),
for learned and rotary positions, cached or not, alone or in a padded batch; without it the
sequence finishes with "context" and the CLI says how to go on. The CLI turns the sampling values
of issue 12 §1 into results or one-line errors."""

from __future__ import annotations

import pytest
import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.generate import generate
from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.tokenizer import train_bpe

CONTEXT = 12


def tiny_model(position: str, seed: int = 0, vocab: int = 40) -> DecoderLM:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=vocab, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                         max_seq_len=CONTEXT, position=position)  # fmt: skip
    return DecoderLM(config).double().eval()


def direct_greedy(model: DecoderLM, ids: list[int]) -> int:
    """The next token of the model run on the last CONTEXT tokens, no cache, no padding."""
    window = torch.tensor([ids[-CONTEXT:]])
    with torch.no_grad():
        return int(model.lm_head(model.hidden_states(window)[0, -1]).argmax())


@pytest.mark.parametrize("position", ["learned", "rope"])
@pytest.mark.parametrize("use_cache", [True, False])
def test_tokens_after_the_crop_equal_the_model_on_the_cropped_window(position, use_cache):
    model = tiny_model(position)
    prompt = [3, 17, 5, 29, 8, 11, 2, 30]
    result = generate(model, None, prompt, max_new_tokens=20, eos_token_id=None,
                      use_cache=use_cache, sliding_window=True)  # fmt: skip
    assert result.finish_reason == "length" and len(result.token_ids) == 20
    ids = list(prompt)
    for token in result.token_ids:
        assert token == direct_greedy(model, ids)
        ids.append(token)
    assert len(prompt) + 20 > 2 * CONTEXT - 4  # the window slid well past the first crop
    plain = generate(model, None, prompt, max_new_tokens=20, eos_token_id=None)
    assert plain.finish_reason == "context"
    assert plain.token_ids == result.token_ids[: len(plain.token_ids)]


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_padded_batch_slides_each_row_on_its_own(side):
    model = tiny_model("rope", seed=1)
    prompts = [[1, 2, 3], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0], [20, 21, 22, 23, 24, 25]]
    batch = generate(model, None, prompts, max_new_tokens=15, eos_token_id=None,
                     padding_side=side, sliding_window=True)  # fmt: skip
    for prompt, result in zip(prompts, batch, strict=True):
        alone = generate(model, None, prompt, max_new_tokens=15, eos_token_id=None,
                         sliding_window=True)  # fmt: skip
        assert result.token_ids == alone.token_ids


def test_a_prompt_longer_than_the_context_is_cropped_with_a_sliding_window():
    model = tiny_model("learned", seed=2)
    prompt = list(range(1, 21))  # 20 tokens > CONTEXT
    with pytest.raises(LLMInternalsError, match="20 tokens, more than the model's context") as err:
        generate(model, None, prompt, max_new_tokens=3)
    assert "pass --sliding-window to keep its last 12 tokens" in err.value.hint
    result = generate(model, None, prompt, max_new_tokens=3, eos_token_id=None,
                      sliding_window=True)  # fmt: skip
    assert result.token_ids[0] == direct_greedy(model, prompt)


def test_sliding_window_is_refused_where_it_cannot_apply():
    model = tiny_model("rope")
    with pytest.raises(LLMInternalsError, match="sliding_window must be True or False"):
        generate(model, None, [1, 2], max_new_tokens=2, sliding_window="yes")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from llm_internals.models import save_checkpoint

    tok = train_bpe("To be, or not to be, that is the question. " * 10, 280)
    torch.manual_seed(4)
    model = DecoderLM(ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4,
                                  max_seq_len=CONTEXT))  # fmt: skip
    folder = tmp_path_factory.mktemp("model")
    save_checkpoint(model, folder)
    tok.save(folder / "tokenizer.json")
    return folder, model, tok


def test_cli_says_how_to_continue_past_the_context(checkpoint, capsys):
    from llm_internals.cli import main

    folder, model, tok = checkpoint
    args = ["generate", "--model", str(folder), "--prompt", "To be", "--temperature", "0",
            "--max-new-tokens", "30"]  # fmt: skip
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"context window ({CONTEXT} tokens) reached; pass --sliding-window to continue" in out
    assert main([*args, "--sliding-window"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "finished: length" in out and "30 tokens" in out


def test_cli_takes_extreme_sampling_values_or_refuses_them_in_one_line(checkpoint, capsys):
    from llm_internals.cli import main

    folder, model, tok = checkpoint
    base = ["generate", "--model", str(folder), "--prompt", "To be", "--max-new-tokens", "5"]
    assert main([*base, "--temperature", "0"]) == 0
    greedy = capsys.readouterr().out.splitlines()[0]
    for extreme in (["--temperature", "1e-44"], ["--temperature", "5e-324"],
                    ["--top-p", "1e-300", "--seed", "1"]):  # fmt: skip
        assert main([*base, *extreme]) == 0, extreme
        assert capsys.readouterr().out.splitlines()[0] == greedy, extreme
    assert main([*base, "--repetition-penalty", "1e-40"]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert "repetition_penalty must be a number in" in lines[0] and len(lines) <= 2
