"""The training losses against closed forms: each NLL equals torch.distributions' log-density up to
a constant, and the Laplace NLL's best scale is the mean absolute error (its mean is fitted like
L1)."""

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
        float(gauss) - 50 * 0.5 * math.log(2 * math.pi), rel=1e-5
    )
    assert float(data_loss_sum(gap, var, target, "laplace_nll")) == pytest.approx(
        float(laplace) - 50 * math.log(2), rel=1e-5
    )
    # the scale b = sqrt(var / 2) keeps var the Laplace variance (2 b²)
    assert float(torch.distributions.Laplace(0.0, math.sqrt(0.3 / 2)).variance) == pytest.approx(
        0.3
    )


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


@pytest.mark.parametrize(
    ("likelihood", "plain", "factor"), [("gaussian_nll", "mse", 0.5), ("laplace_nll", "l1", 1.0)]
)
def test_beta_nll_at_one_gives_the_mean_the_plain_loss_gradient_and_at_zero_is_the_nll(
    likelihood, plain, factor
):
    g = torch.Generator().manual_seed(2)
    target, var = torch.randn(30, generator=g), torch.rand(30, generator=g) * 2 + 0.1
    gap = torch.randn(30, generator=g).requires_grad_()
    data_loss_sum(gap, var, target, likelihood, nll_beta=1.0).backward()
    beta_grad = gap.grad.clone()
    gap.grad = None
    data_loss_sum(gap, var, target, plain).backward()
    # the mean's gradient no longer depends on the head's spread: that of the squared (halved) /
    # absolute error
    assert torch.allclose(beta_grad, factor * gap.grad, atol=1e-6)
    assert float(data_loss_sum(gap, var, target, likelihood, nll_beta=0.0)) == pytest.approx(
        float(data_loss_sum(gap, var, target, likelihood))
    )
    # the weight carries no gradient: the spread's gradient is the plain NLL's, scaled per structure
    var = var.clone().requires_grad_()
    data_loss_sum(gap.detach(), var, target, likelihood, nll_beta=0.5).backward()
    weighted = var.grad.clone()
    var.grad = None
    data_loss_sum(gap.detach(), var, target, likelihood).backward()
    spread = var.detach() if likelihood == "gaussian_nll" else torch.sqrt(0.5 * var.detach())
    assert torch.allclose(weighted, spread**0.5 * var.grad, rtol=1e-5)


def test_beta_nll_needs_an_nll_and_a_beta_in_the_unit_interval():
    from mofbalora.config import ModelConfig

    with pytest.raises(ValueError, match="nll_beta"):
        ModelConfig(likelihood="l1", nll_beta=0.5)
    with pytest.raises(ValueError, match="1.5"):
        ModelConfig(likelihood="laplace_nll", nll_beta=1.5)
    assert ModelConfig(likelihood="laplace_nll", nll_beta=0.5).nll_beta == 0.5
