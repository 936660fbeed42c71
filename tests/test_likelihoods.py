"""The training losses against closed forms: each NLL equals torch.distributions' log-density up to a constant,
and the Laplace NLL's best scale is the mean absolute error (its mean is fitted like L1)."""

import math

import pytest
import torch

from mofbalora.config import ALEATORIC_LIKELIHOODS, LIKELIHOODS
from mofbalora.train import data_loss_sum


def test_nll_losses_equal_the_log_densities_up_to_a_constant():
    g = torch.Generator().manual_seed(0)
    gap, target = torch.rand(50, generator=g) * 3, torch.rand(50, generator=g) * 3
    var = torch.rand(50, generator=g) + 0.05
    gauss = -torch.distributions.Normal(gap, var.sqrt()).log_prob(target).sum()
    laplace = -torch.distributions.Laplace(gap, torch.sqrt(var / 2)).log_prob(target).sum()
    assert float(data_loss_sum(gap, var, target, "gaussian_nll")) == pytest.approx(
        float(gauss) - 50 * 0.5 * math.log(2 * math.pi), rel=1e-5)
    assert float(data_loss_sum(gap, var, target, "laplace_nll")) == pytest.approx(
        float(laplace) - 50 * math.log(2), rel=1e-5)
    # the scale b = sqrt(var / 2) keeps var the Laplace variance (2 b²)
    assert float(torch.distributions.Laplace(0.0, math.sqrt(0.3 / 2)).variance) == pytest.approx(0.3)


def test_laplace_nll_best_scale_is_the_mean_absolute_error():
    g = torch.Generator().manual_seed(1)
    gap, target = torch.zeros(400), torch.randn(400, generator=g) * 0.7
    log_b = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([log_b], lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        var = 2 * torch.exp(2 * log_b).expand(400)
        data_loss_sum(gap, var, target, "laplace_nll").backward()
        opt.step()
    assert float(log_b.detach().exp()) == pytest.approx(float(target.abs().mean()), rel=1e-3)


def test_every_nll_likelihood_is_a_known_likelihood():
    assert set(ALEATORIC_LIKELIHOODS) <= set(LIKELIHOODS)
