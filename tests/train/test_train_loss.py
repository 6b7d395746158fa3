"""The fused head + cross-entropy the trainer uses: the same loss and gradients as the model's head followed by
cross-entropy, without ever holding more than one chunk of logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nift.train.trainer import completion_ce_sum, fused_linear_ce


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_linear_ce_equals_head_then_cross_entropy(dtype):
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, dtype=dtype, requires_grad=True)
    weight = torch.randn(1000, 16, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, 1000, (37,))
    ref = F.cross_entropy((hidden @ weight.t()).float(), targets, reduction="sum")
    ref.backward()
    gh, gw = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    got = fused_linear_ce(hidden, weight, targets, max_elements=5000)  # 5 rows per chunk: 8 chunks
    (2.0 * got).backward()  # the incoming gradient is honoured
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    assert got.dtype == torch.float32 and torch.allclose(got, ref, **tol)
    assert torch.allclose(hidden.grad.float(), 2 * gh.float(), **tol)
    assert torch.allclose(weight.grad.float(), 2 * gw.float(), **tol)


def test_fused_linear_ce_with_a_frozen_head_and_without_grad():
    torch.manual_seed(1)
    hidden = torch.randn(9, 8, requires_grad=True)
    weight = torch.randn(50, 8)  # frozen, as under LoRA
    targets = torch.randint(0, 50, (9,))
    got = fused_linear_ce(hidden, weight, targets)
    got.backward()
    ref_h = hidden.detach().clone().requires_grad_()
    F.cross_entropy(ref_h @ weight.t(), targets, reduction="sum").backward()
    assert torch.allclose(hidden.grad, ref_h.grad, atol=1e-5) and weight.grad is None
    with torch.no_grad():  # evaluation: the loss only
        assert torch.allclose(fused_linear_ce(hidden, weight, targets), got)
    assert torch.allclose(completion_ce_sum(hidden.detach() @ weight.t(), targets), got.detach(), atol=1e-4)
