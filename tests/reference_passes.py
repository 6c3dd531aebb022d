"""The independent reference every scoring test compares with: a direct transformers forward pass.

It shares no code with lm-eval or qd-hf: a rolling document is ``[BOS] + tokenizer.encode(text,
add_special_tokens=False)``, each text token scored once, logits cast to float64 before the
log-softmax.
"""

from __future__ import annotations

import torch


def direct_doc_loglikelihoods(model, tokenizer, texts: list[str]) -> list[float]:
    """sum_t log p(token_t | BOS, tokens_<t) per text."""
    totals = []
    for text in texts:
        ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False).input_ids]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0, :-1].double(), dim=-1)
        totals.append(logprobs.gather(1, ids[0, 1:, None]).sum().item())
    return totals
