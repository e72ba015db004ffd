"""Quantisers, indices, and the entropy penalties (factorised vs the exact 2^d oracle)."""

from __future__ import annotations

import math

import pytest
import torch
from bsq_tokenizer.quantizers import (
    BSQ,
    LFQ,
    bits_to_indices,
    commitment_loss,
    entropy_penalty,
    exact_entropy,
    factorized_entropy,
    indices_to_bits,
    indices_to_codes,
    tokens_last,
)


def test_index_bit_order_is_msb_first():
    bits = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 1], [1, 0, 1, 1]], dtype=torch.uint8)
    assert bits_to_indices(bits).tolist() == [8, 1, 11]
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 2**20, (100,), generator=g)
    assert torch.equal(bits_to_indices(indices_to_bits(idx, 20)), idx)
    big = torch.randint(0, 2, (5, 63), generator=g, dtype=torch.uint8)
    assert torch.equal(indices_to_bits(bits_to_indices(big), 63), big)
    with pytest.raises(ValueError, match="d <= 63"):
        bits_to_indices(torch.zeros(2, 64, dtype=torch.uint8))
    with pytest.raises(ValueError):
        indices_to_bits(torch.tensor([16]), 4)
    codes = indices_to_codes(torch.tensor([0, 15]), 4)
    assert torch.allclose(codes, torch.tensor([[-0.5] * 4, [0.5] * 4]))


@pytest.mark.parametrize("d", [1, 3, 6, 10])
@pytest.mark.parametrize("spherical", [True, False])
def test_factorised_per_sample_entropy_is_exact(d, spherical):
    g = torch.Generator().manual_seed(d)
    x = torch.randn(64, d, generator=g, dtype=torch.float64)
    if spherical:
        x = x / x.norm(dim=1, keepdim=True)
    scale = 1 / math.sqrt(d) if spherical else 1.0
    for tau in (0.5, 3.0, 100.0):
        hps_f, hcb_f = factorized_entropy(x, tau, scale)
        hps_e, hcb_e = exact_entropy(x, tau, scale)
        assert abs(hps_f.item() - hps_e.item()) < 1e-6
        # the factorised codebook entropy is an upper bound (subadditivity), with equality for d = 1
        assert hcb_f.item() >= hcb_e.item() - 1e-9
        if d == 1:
            assert abs(hcb_f.item() - hcb_e.item()) < 1e-9


def test_codebook_bound_is_tight_for_independent_bits_and_loose_for_correlated():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 4, generator=g, dtype=torch.float64)
    f, e = factorized_entropy(x, 1.0, 1.0)[1], exact_entropy(x, 1.0, 1.0)[1]
    assert f - e < 0.01  # independent bits: almost equal
    same = x[:, :1].sign().repeat(1, 4)  # all bits identical: true entropy ~ log 2, bound ~ 4 log 2
    f, e = factorized_entropy(same, 100.0, 1.0)[1], exact_entropy(same, 100.0, 1.0)[1]
    assert e.item() == pytest.approx(math.log(2), abs=0.01) and f.item() == pytest.approx(4 * math.log(2), abs=0.01)


def test_factorised_entropy_runs_at_d64_with_gradients():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 64, 16, 16, generator=g, requires_grad=True)
    out = BSQ(64)(x)
    loss = out.entropy_penalty + 0.25 * out.commitment
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert 0 <= out.per_sample_entropy.item() <= 64 * math.log(2) + 1e-4
    assert 0 <= out.codebook_entropy.item() <= 64 * math.log(2) + 1e-4
    with pytest.raises(ValueError, match="too large"):
        exact_entropy(torch.zeros(2, 64), 1.0, 1.0)


def test_bsq_and_lfq_quantisers():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 3, 5, generator=g, requires_grad=True)
    out = BSQ(16)(x)
    assert torch.allclose(out.codes.norm(dim=1), torch.ones(2, 3, 5))
    assert torch.equal(out.bits, (x > 0).permute(0, 2, 3, 1).to(torch.uint8))
    # straight-through: d codes / d x equals d normalize(x) / d x
    out.codes.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # commitment ||u - q||^2 per token is bounded by 2 - 2/sqrt(d) (reference 2.3); loss is its mean over d
    u = torch.nn.functional.normalize(x.detach(), dim=1)
    per_token = (u - out.codes.detach()).pow(2).sum(1)
    assert (per_token <= 2 - 2 / math.sqrt(16) + 1e-6).all()
    assert out.commitment.item() == pytest.approx(per_token.mean().item() / 16, rel=1e-5)
    lfq = LFQ(16)(x.detach())
    assert torch.equal(lfq.codes.abs(), torch.ones_like(lfq.codes)) and torch.equal(lfq.bits, out.bits)
    assert lfq.commitment.item() == pytest.approx(commitment_loss(x.detach(), torch.sign(x.detach())).item())
    with pytest.raises(ValueError):
        BSQ(8)(x)


def test_entropy_penalty_prefers_confident_diverse_codes():
    g = torch.Generator().manual_seed(3)
    diverse = torch.randn(512, 8, generator=g).sign()  # confident and spread over codes
    collapsed = torch.ones(512, 8)  # confident but one code
    uncertain = torch.zeros(512, 8)  # p = 0.5 everywhere
    pen = {
        k: entropy_penalty(v, 10.0, 1.0).item()
        for k, v in {"diverse": diverse, "collapsed": collapsed, "uncertain": uncertain}.items()
    }
    assert pen["diverse"] < pen["collapsed"] and pen["diverse"] < pen["uncertain"]
    small = torch.randn(32, 6, generator=g)
    assert entropy_penalty(small, 1.0, 1.0, exact=True).item() >= entropy_penalty(small, 1.0, 1.0).item() - 1e-6
    assert tokens_last(torch.zeros(2, 5, 3, 4)).shape == (24, 5)
