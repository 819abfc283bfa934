"""Distil the benchmark's draft from its target: the draft learns the target's next-token
distributions instead of the corpus's, so that it proposes what the target would choose.

    loss = KL(p_target || q_draft) = sum_v p(v) (log p(v) - log q(v)), mean over tokens

on random blocks of the training split (the teacher runs without gradients). Plain training
on the corpus gave a greedy acceptance alpha of only ~0.64 at gamma 4 (docs/LOG.md): the two
models, trained for different numbers of tokens, disagree where the text is uncertain; the
KL loss spends the draft's capacity on agreeing with the target exactly there. The student
starts from the plainly trained draft. Everything but the loss is the project's training code:
BatchSampler, build_optimizer (Muon + AdamW), WarmupCosine, clip_grad_norm.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from llm_internals.console import console, progress
from llm_internals.models import DecoderLM
from llm_internals.training.builders import build_optimizer
from llm_internals.training.config import TrainConfig
from llm_internals.training.data import BatchSampler, TokenSplits
from llm_internals.training.gradients import clip_grad_norm
from llm_internals.training.schedule import WarmupCosine, set_lr


def kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of KL(softmax(teacher) || softmax(student)), in nats."""
    vocab = student_logits.shape[-1]
    return F.kl_div(
        F.log_softmax(student_logits.float().reshape(-1, vocab), dim=-1),
        F.log_softmax(teacher_logits.float().reshape(-1, vocab), dim=-1),
        log_target=True,
        reduction="batchmean",
    )


@torch.no_grad()
def evaluate(student: DecoderLM, teacher: DecoderLM, tokens: Any, config: TrainConfig) -> dict:
    """KL to the teacher, the student's cross-entropy, and how often the two argmaxes agree
    (the greedy acceptance rate if acceptances were independent), on fixed validation blocks."""
    sampler = BatchSampler(tokens, config.batch_size, config.block_size, seed=config.seed + 1)
    kls, ces, agree = [], [], []
    for _ in range(config.eval_iters):
        x, y = sampler.next_batch()
        t_logits, s_logits = teacher(x).float(), student(x).float()
        kls.append(float(kl_loss(s_logits, t_logits)))
        ces.append(float(F.cross_entropy(s_logits.reshape(-1, s_logits.shape[-1]), y.reshape(-1))))
        agree.append(float((t_logits.argmax(-1) == s_logits.argmax(-1)).float().mean()))
    n = len(kls)
    return {
        "val_kl": sum(kls) / n,
        "val_loss": sum(ces) / n,
        "val_argmax_agreement": sum(agree) / n,
    }


def distill(
    student: DecoderLM, teacher: DecoderLM, splits: TokenSplits, config: TrainConfig
) -> dict[str, Any]:
    """Train `student` on the KL loss for config.max_steps (or config.max_minutes); returns
    what was measured before and after."""
    teacher.eval()
    before = evaluate(student.eval(), teacher, splits.val, config)
    student.train()
    optimizer, base_lrs = build_optimizer(student, config)
    schedule = WarmupCosine(config.lr, config.min_lr, config.warmup_steps, config.max_steps)
    batches = BatchSampler(splits.train, config.batch_size, config.block_size, config.seed)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.dtype == "bfloat16")
    started, step = time.perf_counter(), 0
    with progress() as bar:
        task = bar.add_task("distilling the draft", total=config.max_steps)
        while step < config.max_steps:
            set_lr(optimizer, schedule, step, base_lrs)
            x, _ = batches.next_batch()
            with torch.no_grad(), autocast:
                teacher_logits = teacher(x)
            with autocast:
                loss = kl_loss(student(x), teacher_logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_grad_norm(student.parameters(), config.grad_clip)
            optimizer.step()
            step += 1
            kl = float(loss.detach())
            bar.update(task, completed=step, description=f"distilling: KL {kl:.3f}")
            if config.max_minutes and time.perf_counter() - started > 60 * config.max_minutes:
                break
    student.eval()
    after = evaluate(student, teacher, splits.val, config)
    console.print(
        f"distilled {step} steps: validation KL to the target {before['val_kl']:.3f} -> "
        f"{after['val_kl']:.3f}, argmax agreement {before['val_argmax_agreement']:.3f} -> "
        f"{after['val_argmax_agreement']:.3f}"
    )
    return {"steps": step, "seconds": time.perf_counter() - started, "before": before,
            "after": after}  # fmt: skip
