"""Adapter math: exact equalities, distributions against explicit weight sampling, KL against
Monte Carlo."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mofbalora.adapters import (
    AdapterConfig,
    BaLoRALinear,
    BaseModelMismatchError,
    LoRALinear,
    inject_adapters,
    kl_per_weight,
    load_adapter,
    merge_adapters,
    sample_forward,
    sampling,
    save_adapter,
    seeded_generator,
    total_kl,
    unmerge_adapters,
)
from mofbalora.rows import row_sets


def _pair(in_f=12, out_f=7, rank=4, seed=0):
    torch.manual_seed(seed)
    base = nn.Linear(in_f, out_f)
    bal = BaLoRALinear(base, rank)
    lora = LoRALinear(base, rank)
    with torch.no_grad():
        bal.adapter_B.normal_()
        lora.adapter_A.copy_(bal.adapter_A)
        lora.adapter_B.copy_(bal.adapter_B)
    return base, bal, lora


class ToyMLP(nn.Module):
    def __init__(self, d_in=6, hidden=16, d_out=1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, d_out),
        )

    def forward(self, x):
        return self.net(x)


class ToyMessagePassing(nn.Module):
    """Atoms on a ring per graph: embed, one message-passing step, per-atom readout, mean pool
    per graph."""

    def __init__(self, d=8):
        super().__init__()
        self.embed = nn.Linear(3, d)
        self.message = nn.Linear(2 * d, d)
        self.readout = nn.Linear(d, 1)

    def forward(self, x, sizes):
        index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        h = torch.tanh(self.embed(x))
        offsets = torch.cumsum(torch.tensor([0] + sizes[:-1]), 0)
        nbr = torch.cat(
            [
                torch.roll(torch.arange(n), 1) + o
                for n, o in zip(sizes, offsets.tolist(), strict=True)
            ]
        )
        with row_sets(atom=index):
            h = h + torch.tanh(self.message(torch.cat([h, h[nbr]], dim=1)))
            per_atom = self.readout(h).squeeze(-1)
        return torch.zeros(len(sizes)).index_add(0, index, per_atom) / torch.tensor(
            sizes, dtype=torch.float
        )


def test_deterministic_balora_equals_lora_exactly():
    _, bal, lora = _pair()
    x = torch.randn(50, 12)
    with sampling(stochastic=False):
        assert torch.equal(bal(x), lora(x))
    bal.eval()
    assert torch.equal(bal(x), lora(x))  # eval mode without a context is deterministic too


def test_zero_b_gives_base_output_exactly_even_when_sampling():
    base = nn.Linear(10, 5)
    bal = BaLoRALinear(base, 4)
    x = torch.randn(30, 10)
    with sampling(stochastic=True):
        assert torch.equal(bal(x), base(x))


def test_merge_equals_unmerged_and_unmerge_restores_base():
    base, bal, lora = _pair()
    w0 = base.weight.detach().clone()
    x = torch.randn(40, 12)
    with sampling(stochastic=False):
        before = bal(x)
        bal.merge()
        assert torch.allclose(bal(x), before, atol=1e-5)
        bal.unmerge()
    assert torch.allclose(base.weight, w0, atol=1e-6)
    # merged + stochastic still samples around the merged mean, with the same draws
    with sampling(stochastic=True, generator=seeded_generator(3)):
        unmerged_draw = bal(x)
    bal.merge()
    with sampling(stochastic=True, generator=seeded_generator(3)):
        merged_draw = bal(x)
    assert torch.allclose(merged_draw, unmerged_draw, atol=1e-5)


def test_local_reparameterisation_matches_explicit_weight_sampling():
    """Output mean and variance of the rank-space sampling equal those from sampling ω_A ~ N(θ_A,
    αθ_A²)."""
    torch.manual_seed(1)
    base = nn.Linear(9, 3)
    bal = BaLoRALinear(base, 4, noise_scope="row")
    with torch.no_grad():
        bal.adapter_B.normal_()
        bal.adapter_alpha_w.normal_(std=0.3)
    x = torch.randn(1, 9)
    m = 40_000
    with torch.no_grad(), sampling(stochastic=True, generator=seeded_generator(0)):
        local = bal(x.expand(m, 9))  # each row an independent draw
        alpha = bal.alpha(x)[0, 0]
        A, B = bal.adapter_A[0], bal.adapter_B[0]
        g = seeded_generator(1)
        omega = A + torch.sqrt(alpha * A * A) * torch.randn(m, *A.shape, generator=g)
        explicit = base(x) + bal.scale * torch.einsum("or,mri,i->mo", B, omega, x[0])
    se_mean = explicit.std(0) / math.sqrt(m)
    assert torch.all((local.mean(0) - explicit.mean(0)).abs() < 5 * math.sqrt(2) * se_mean)
    # variance ratio: for Gaussian samples the relative s.e. of a variance is sqrt(2/(m-1)) ≈ 0.7 %
    ratio = local.var(0) / explicit.var(0)
    assert torch.all((ratio - 1).abs() < 0.05), ratio


def test_kl_closed_form_equals_monte_carlo():
    alpha, alpha0, theta = 0.35, 0.1 / 0.9, 0.8
    g = seeded_generator(0)
    m = 400_000
    w = theta + math.sqrt(alpha) * abs(theta) * torch.randn(m, generator=g, dtype=torch.float64)
    q = torch.distributions.Normal(theta, math.sqrt(alpha) * abs(theta))
    p = torch.distributions.Normal(0.0, math.sqrt(alpha0) * abs(theta))
    log_ratio = q.log_prob(w) - p.log_prob(w)
    mc, se = log_ratio.mean().item(), log_ratio.std().item() / math.sqrt(m)
    closed = kl_per_weight(torch.tensor(alpha, dtype=torch.float64), alpha0).item()
    assert abs(mc - closed) < 5 * se, (mc, closed, se)
    # also equals torch's analytic Gaussian KL
    assert abs(torch.distributions.kl_divergence(q, p).item() - closed) < 1e-5


def test_layer_kl_sums_weights_and_averages_rows_and_reaches_alpha_network():
    torch.manual_seed(0)
    bal = BaLoRALinear(nn.Linear(5, 3), 2, prior_dropout=0.2)
    with torch.no_grad():
        bal.adapter_alpha_w.normal_()
    x = torch.randn(11, 5)
    bal(x)
    alpha = bal.alpha(x)
    expected = bal.adapter_A[0].numel() * kl_per_weight(alpha, 0.25).mean()
    assert torch.allclose(bal.kl(), expected)
    bal.kl().backward()
    assert bal.adapter_alpha_w.grad.abs().sum() > 0 and bal.adapter_alpha_b.grad.abs() > 0
    # with this prior the KL does not depend on θ_A (its gradient w.r.t. θ_A is exactly zero) ...
    assert bal.adapter_A.grad is None or torch.all(bal.adapter_A.grad == 0)
    # ... while the training loss (data + KL) reaches θ_A through the sampled data term
    bal.zero_grad()
    with torch.no_grad():
        bal.adapter_B.normal_()
    with sampling(stochastic=True, generator=seeded_generator(0)):
        loss = bal(x).pow(2).mean() + bal.kl() / 100
    loss.backward()
    assert bal.adapter_A.grad.abs().sum() > 0 and bal.adapter_alpha_w.grad.abs().sum() > 0


def test_kl_starts_at_its_minimum_over_alpha():
    """α starts at α0, the minimiser of the KL over α; the minimum is 1/(2 α0) per weight, not 0,
    because the prior is centred at 0 while q is centred at θ."""
    bal = BaLoRALinear(nn.Linear(4, 2), 3, prior_dropout=0.1)
    bal(torch.randn(5, 4))
    assert torch.allclose(bal.kl(), torch.tensor(12 * 0.5 / (0.1 / 0.9)))
    a = torch.linspace(0.01, 2, 200)
    assert torch.argmin(kl_per_weight(a, 0.5)).item() == torch.argmin((a - 0.5).abs()).item()


def test_alpha_becomes_input_dependent_on_a_heteroscedastic_toy_problem():
    """Inputs along e0 need the adapter (target 3): noise there hurts the fit, so α(e0) must drop;
    inputs along e1 have target 0 the base already fits, so the KL keeps α(e1) near α0."""
    torch.manual_seed(0)
    base = nn.Linear(4, 1)
    with torch.no_grad():
        base.weight.zero_()
        base.bias.zero_()
    bal = BaLoRALinear(base, 2, prior_dropout=0.3)
    xa = torch.tensor([1.0, 0, 0, 0]) + 0.05 * torch.randn(64, 4)
    xb = torch.tensor([0, 1.0, 0, 0]) + 0.05 * torch.randn(64, 4)
    x, y = torch.cat([xa, xb]), torch.cat([torch.full((64, 1), 3.0), torch.zeros(64, 1)])
    opt = torch.optim.Adam([p for n, p in bal.named_parameters() if "adapter_" in n], lr=0.05)
    g = seeded_generator(0)
    a_before = bal.alpha(x)
    assert torch.allclose(a_before, a_before[0])
    for _ in range(300):
        opt.zero_grad()
        with sampling(stochastic=True, generator=g):
            loss = (bal(x) - y).pow(2).mean() + bal.kl() / len(x)
        loss.backward()
        opt.step()
    with torch.no_grad():
        alpha_a, alpha_b = bal.alpha(xa).mean().item(), bal.alpha(xb).mean().item()
    assert alpha_b > 2 * alpha_a, (alpha_a, alpha_b)


@pytest.mark.parametrize("identical_atoms", [True, False])
def test_noise_scopes_on_graphs_of_growing_size(identical_atoms):
    """Pool (mean) a per-atom BaLoRA readout over graphs of 4, 16 and 64 atoms. Per-row noise
    averages out like 1/sqrt(n_atoms). With one weight sample per structure the pooled spread keeps
    its size when the atoms are alike (they are then perfectly correlated); for unlike, mixed-sign
    atoms the rows of one weight sample are less than perfectly correlated and the spread may fall
    (less than per row): what the weight posterior says. Only the
    rank-shared approximation keeps the spread whatever the atoms (its rows are forced to
    correlation +1)."""
    sizes = [4, 16, 64]
    torch.manual_seed(0)
    x = (
        torch.cat([torch.ones(n, 3) for n in sizes])
        if identical_atoms
        else torch.randn(sum(sizes), 3)
    )
    spreads = {}
    for scope in ("structure", "row", "rank_shared"):
        torch.manual_seed(0)
        model = ToyMessagePassing()
        inject_adapters(
            model,
            AdapterConfig(
                kind="balora",
                targets=["readout", "message"],
                rank=4,
                noise_scope=scope,
                prior_dropout=0.5,
            ),
            row_set_for=lambda name: "atom",
        )
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "adapter_B" in n:
                    p.normal_()
        g = seeded_generator(0)
        with torch.no_grad(), sampling(stochastic=True, generator=g):
            draws = torch.stack([model(x, sizes) for _ in range(600)])
        spreads[scope] = draws.std(0)
    s, r, shared = spreads["structure"], spreads["row"], spreads["rank_shared"]
    shrink_if_row = math.sqrt(sizes[-1] / sizes[0])  # 4x
    assert (r[0] / r[-1]).item() > 0.7 * shrink_if_row  # per-row: falls like 1/sqrt(n)
    assert (shared[0] / shared[-1]).item() < 2.0  # rank-shared: does not, whatever the atoms
    if identical_atoms:  # one weight sample on identical rows: the rows are one draw
        assert torch.allclose(s[0], s[-1], rtol=0.1)
        assert torch.allclose(s, shared, rtol=0.15)
    else:  # unlike atoms: between the two (here, through tanh features, closer to rank-shared)
        assert (s[0] / s[-1]).item() < (r[0] / r[-1]).item()


def _explicit_structure_outputs(layer, x, n_draws, seed):
    """Pooled (mean over rows) output of ``layer`` on one structure ``x`` with explicitly sampled
    weights: one E (r × in) per draw, ω_A(x_i) = θ_A + sqrt(α(x_i)) |θ_A| ⊙ E."""
    g = seeded_generator(seed)
    A, B = layer.adapter_A[0], layer.adapter_B[0]
    alpha = layer.alpha(x)[:, 0]  # (rows,)
    E = torch.randn(n_draws, *A.shape, generator=g, dtype=torch.float64)
    A64, x64 = A.double(), x.double()
    noise = torch.einsum("dri,ni->dnr", A64.abs() * E, x64)
    h = (x64 @ A64.T)[None] + alpha.double().sqrt()[None, :, None] * noise
    y = layer.base_layer(x).double()[None] + layer.scale * h @ B.double().T
    return y.mean(1)  # (draws, out)


def test_structure_noise_matches_explicit_per_structure_weight_sampling():
    """Mixed-sign, unlike rows of one structure: the pooled output's mean and covariance from the
    layer equal those from sampling one ω_A per structure explicitly (means within 5 s.e.,
    variances within 5 %)."""
    torch.manual_seed(3)
    base = nn.Linear(16, 3)
    layer = BaLoRALinear(base, 4, noise_scope="structure", prior_dropout=0.3)
    layer.row_set = "atom"
    with torch.no_grad():
        layer.adapter_B.normal_()
        layer.adapter_alpha_w.normal_(std=0.2)
    x = torch.randn(10, 16)
    m = 40_000
    with torch.no_grad():
        y = (
            sample_forward(
                layer, x, m, seed=0, owner=torch.zeros(10, dtype=torch.long), row_set="atom"
            )
            .double()
            .mean(1)
        )
        explicit = _explicit_structure_outputs(layer, x, m, seed=1)
    se = explicit.std(0) / math.sqrt(m)
    assert torch.all((y.mean(0) - explicit.mean(0)).abs() < 5 * math.sqrt(2) * se)
    ratio = y.var(0) / explicit.var(0)
    assert torch.all((ratio - 1).abs() < 0.05), ratio
    cov_y, cov_e = torch.cov(y.T), torch.cov(explicit.T)
    assert torch.allclose(cov_y, cov_e, rtol=0.08, atol=0.03 * cov_e.diagonal().max().item())


@pytest.mark.parametrize(
    ("scope", "expected"), [("structure", -1.0), ("rank_shared", 1.0), ("row", 0.0)]
)
def test_rows_x_and_minus_2x_of_one_structure(scope, expected):
    """Constant α, rows x0 and −2·x0 of one structure: one shared ω_A gives their noise correlation
    −1; the rank-shared draw gives +1 (not a weight sample); per-row draws give 0."""
    torch.manual_seed(0)
    layer = BaLoRALinear(
        nn.Linear(8, 1, bias=False), 3, alpha_network="constant", noise_scope=scope
    )
    with torch.no_grad():
        layer.adapter_B.normal_()
    x0 = torch.randn(1, 8)
    x = torch.cat([x0, -2 * x0])
    layer.row_set = "atom"
    with torch.no_grad():
        y = sample_forward(
            layer, x, 4000, seed=0, owner=torch.zeros(2, dtype=torch.long), row_set="atom"
        )[..., 0]
    corr = torch.corrcoef(y.T)[0, 1].item()
    assert abs(corr - expected) < (1e-4 if expected else 0.06), corr


def test_two_row_sets_of_equal_count_keep_their_own_owners():
    """Atoms [0,0,0,0,0,0,1,1] and edges [0,0,1,1,1,1,1,1]: 8 rows each. With identical inputs and
    exact structure noise, two rows draw the same noise exactly when they belong to the same
    structure, so each layer's equal-output pattern reveals which owners it used."""
    torch.manual_seed(0)
    atom_layer = BaLoRALinear(nn.Linear(4, 2), 2, noise_scope="structure")
    edge_layer = BaLoRALinear(nn.Linear(4, 2), 2, noise_scope="structure")
    atom_layer.set_identity("atom_mlp", "atom")
    edge_layer.set_identity("edge_mlp", "edge")
    for layer in (atom_layer, edge_layer):
        layer.adapter_B.data.normal_()
    x = torch.ones(8, 4)
    atoms = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])
    edges = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1])
    with torch.no_grad(), sampling(stochastic=True, noise_seed=1), row_sets(atom=atoms, edge=edges):
        ya, ye = atom_layer(x), edge_layer(x)
    for y, owner in ((ya, atoms), (ye, edges)):
        same = (y[:, None, :] == y[None, :, :]).all(-1)
        assert torch.equal(same, owner[:, None] == owner[None, :])


def test_a_missing_or_wrongly_sized_row_set_raises_naming_the_layer():
    layer = BaLoRALinear(nn.Linear(4, 2), 2)
    layer.set_identity("trunk.block.edge_mlp", "edge")
    x = torch.randn(5, 4)
    with sampling(stochastic=True), row_sets(atom=torch.zeros(5, dtype=torch.long)):
        with pytest.raises(
            ValueError, match=r"trunk\.block\.edge_mlp.*'edge'.*did not name.*\['atom'\]"
        ):
            layer(x)
    with sampling(stochastic=True), row_sets(edge=torch.zeros(7, dtype=torch.long)):
        with pytest.raises(ValueError, match=r"trunk\.block\.edge_mlp.*7 rows.*has 5"):
            layer(x)


def test_a_backbone_layer_without_a_row_set_rule_is_an_error():
    from mofbalora.backbones.chgnet import CHGNetBackbone

    with pytest.raises(ValueError, match=r"no row-set rule covers layer 'trunk\.nope'"):
        CHGNetBackbone.row_set_for(CHGNetBackbone.__new__(CHGNetBackbone), "trunk.nope")


def test_draws_do_not_depend_on_batch_composition_or_order():
    """Keyed draws: a structure's noise is a function of (seed, its key, pass, layer), not of its
    batch."""
    from mofbalora.adapters.context import structure_keys

    torch.manual_seed(0)
    for scope in ("structure", "row", "rank_shared"):
        layer = BaLoRALinear(nn.Linear(6, 3), 2, noise_scope=scope)
        layer.set_identity("readout.0", "atom")
        layer.adapter_B.data.normal_()
        sizes = [3, 5, 2, 4]
        xs = [torch.randn(n, 6) for n in sizes]
        digests = [f"{k:02x}" * 32 for k in range(4)]

        def run(order, xs=xs, sizes=sizes, digests=digests, layer=layer):
            x = torch.cat([xs[k] for k in order])
            owner = torch.repeat_interleave(
                torch.arange(len(order)), torch.tensor([sizes[k] for k in order])
            )
            keys = structure_keys([digests[k] for k in order], 5)
            with (
                torch.no_grad(),
                sampling(stochastic=True, noise_seed=11, structure_keys=keys),
                row_sets(atom=owner),
            ):
                return dict(
                    zip(order, torch.split(layer(x), [sizes[k] for k in order]), strict=True)
                )

        together, reordered = run([0, 1, 2, 3]), run([3, 1, 0, 2])
        for k in range(4):
            alone = run([k])[k]
            assert torch.allclose(together[k], alone, atol=1e-6), scope
            assert torch.allclose(reordered[k], alone, atol=1e-6), scope


def test_keyed_normals_are_standard_normal_and_independent_across_keys():
    from mofbalora.adapters.noise import keyed_normal, stream_heads

    words = torch.stack(
        [
            torch.zeros(2000, dtype=torch.long),
            torch.arange(2000),
            torch.zeros(2000, dtype=torch.long),
        ],
        1,
    )
    z = keyed_normal(stream_heads(3, words, 7), 256, dtype=torch.float64)
    assert abs(z.mean().item()) < 5 / math.sqrt(z.numel())
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / z.numel())
    # no correlation between neighbouring keys or neighbouring elements
    assert (
        abs(torch.corrcoef(torch.stack([z[:-1].reshape(-1), z[1:].reshape(-1)]))[0, 1].item())
        < 0.01
    )
    assert (
        abs(torch.corrcoef(torch.stack([z[:, :-1].reshape(-1), z[:, 1:].reshape(-1)]))[0, 1].item())
        < 0.01
    )
    # tails: P(|z| > 3) = 0.27 %
    assert abs((z.abs() > 3).double().mean().item() - 0.0027) < 0.0006
    other = keyed_normal(stream_heads(4, words, 7), 256, dtype=torch.float64)
    assert not torch.allclose(z, other)


def test_grouped_matmul_equals_a_loop_over_groups():
    from mofbalora.adapters.balora import grouped_matmul

    torch.manual_seed(0)
    group = torch.tensor([2, 0, 0, 1, 2, 2, 2, 2, 2, 4, 0] + [3] * 40)
    x = torch.randn(len(group), 5, requires_grad=True)
    W = torch.randn(5, 3, 5, requires_grad=True)
    out = grouped_matmul(x, group, W)
    loop = torch.stack([W[g] @ x[i] for i, g in enumerate(group.tolist())])
    assert torch.allclose(out, loop, atol=1e-5)
    (out.sum() - loop.sum()).backward()
    assert torch.allclose(W.grad, torch.zeros_like(W), atol=1e-5)


def test_alpha_clamp_keeps_a_gradient_at_its_bounds():
    from mofbalora.adapters.balora import LOGIT_MAX, LOGIT_MIN, soft_clamp

    logit = torch.tensor([-50.0, -9.0, -2.0, 3.0, 50.0], requires_grad=True)
    c = soft_clamp(logit)
    assert torch.all(c >= LOGIT_MIN - 1e-5) and torch.all(c <= LOGIT_MAX + 1e-5)
    assert abs(c[2].item() + 2.0) < 1e-2
    c.sum().backward()
    assert torch.all(logit.grad > 0)


def test_a_layer_called_twice_in_one_forward_adds_its_kl():
    torch.manual_seed(0)
    layer = BaLoRALinear(nn.Linear(4, 4), 2, prior_dropout=0.2)
    layer.adapter_alpha_w.data.normal_()
    x1, x2 = torch.randn(3, 4), torch.randn(5, 4)
    with sampling(kl_scope=object()):
        layer(x1)
        layer(x2)
    both = (
        layer.adapter_A[0].numel() * kl_per_weight(layer.alpha(torch.cat([x1, x2])), 1 / 4).mean()
    )
    assert torch.allclose(layer.kl(), both)
    layer(x1)  # outside a scope each call starts afresh
    assert torch.allclose(
        layer.kl(), layer.adapter_A[0].numel() * kl_per_weight(layer.alpha(x1), 1 / 4).mean()
    )


def test_injection_patterns_excludes_and_summary():
    model = ToyMLP()
    summary = inject_adapters(
        model, AdapterConfig(kind="balora", targets=["re:net\\.[0-9]$"], exclude=["net.4"], rank=2)
    )
    assert summary.adapted == ["net.0", "net.2"]
    assert isinstance(model.net[0], BaLoRALinear) and isinstance(model.net[4], nn.Linear)
    expected_adapter = sum(2 * (i + o) for i, o in [(6, 16), (16, 16)])
    expected_alpha = (6 + 1) + (16 + 1)
    assert summary.n_adapter == expected_adapter + expected_alpha
    assert summary.n_alpha_network == expected_alpha
    assert summary.n_trainable == summary.n_adapter
    assert all(not p.requires_grad for n, p in model.named_parameters() if "adapter_" not in n)
    assert "α-network" in str(summary)
    m2 = ToyMLP()
    # suffix
    assert inject_adapters(m2, AdapterConfig(kind="lora", targets=["2"])).adapted == ["net.2"]


def test_injection_without_match_lists_patterns_and_names():
    with pytest.raises(ValueError, match=r"no module matches targets \['nope'\].*net\.0"):
        inject_adapters(ToyMLP(), AdapterConfig(kind="lora", targets=["nope"]))


def test_unknown_options_are_rejected_with_choices():
    with pytest.raises(ValueError, match="choose from"):
        AdapterConfig(kind="bayes")
    with pytest.raises(ValueError, match="choose from"):
        BaLoRALinear(nn.Linear(2, 2), 1, noise_scope="atom")
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(nn.Conv1d(2, 2, 1))


def test_mc_dropout_and_ensemble_baselines():
    torch.manual_seed(0)
    model = ToyMLP()
    inject_adapters(
        model, AdapterConfig(kind="mc_dropout", targets=["net.0", "net.2"], mc_dropout=0.3)
    )
    for n, p in model.named_parameters():
        if "adapter_B" in n:
            p.data.normal_()
    x = torch.randn(8, 6)
    with sampling(stochastic=False):
        assert torch.equal(model(x), model(x))
    with sampling(stochastic=True, generator=seeded_generator(0)):
        assert not torch.equal(model(x), model(x))
    ens = ToyMLP()
    inject_adapters(ens, AdapterConfig(kind="lora_ensemble", targets=["net.2"], n_members=3))
    layer = ens.net[2]
    assert not torch.allclose(layer.adapter_A[0], layer.adapter_A[1])  # independent initialisation
    with pytest.raises(ValueError, match="member"):
        ens(x)
    layer.adapter_B.data.normal_()
    with sampling(member=0):
        y0 = ens(x)
    with sampling(member=1):
        y1 = ens(x)
    assert not torch.allclose(y0, y1)


def test_sample_forward_is_reproducible_and_centred_on_the_mean():
    torch.manual_seed(0)
    model = ToyMLP()
    inject_adapters(
        model, AdapterConfig(kind="balora", targets=["net.2"], rank=4, prior_dropout=0.2)
    )
    model.net[2].adapter_B.data.normal_(std=0.3)
    x = torch.randn(5, 6)
    with torch.no_grad():
        a = sample_forward(model, x, 64, seed=7)
        b = sample_forward(model, x, 64, seed=7, max_rows=20)  # chunked
        c = sample_forward(model, x, 64, seed=8)
        with sampling(stochastic=False):
            mean = model(x)
    assert a.shape == (64, 5, 1)
    assert torch.equal(a, sample_forward(model, x, 64, seed=7))
    assert not torch.equal(a, c)
    assert b.shape == a.shape
    assert torch.all((a.mean(0) - mean).abs() < 4 * a.std(0) / 8 + 1e-6)


def test_total_kl_sums_layers():
    model = ToyMLP()
    inject_adapters(
        model, AdapterConfig(kind="balora", targets=["net.0", "net.2"], prior_dropout=0.3)
    )
    for n, p in model.named_parameters():
        if "alpha_w" in n:
            p.data.normal_()
    model(torch.randn(4, 6))
    assert torch.allclose(total_kl(model), model.net[0].kl() + model.net[2].kl())
    assert total_kl(model) > 0


def _base_identity(model):
    from mofbalora.backbones.base import state_dict_digest

    return {
        "backbone": "toy",
        "weights_sha256": state_dict_digest(
            {k: v for k, v in model.state_dict().items() if "adapter_" not in k}
        ),
    }


def test_save_load_round_trip_bit_for_bit_and_draw_for_draw(tmp_path):
    torch.manual_seed(0)
    model = ToyMLP()
    identity = _base_identity(model)
    cfg = AdapterConfig(kind="balora", targets=["net.0", "net.2"], rank=3)
    inject_adapters(model, cfg)
    for n, p in model.named_parameters():
        if "adapter_" in n:
            p.data.normal_(std=0.2)
    save_adapter(model, tmp_path / "ad", cfg, identity)
    torch.manual_seed(0)
    fresh = ToyMLP()  # same base weights (same seed), fresh adapters
    load_adapter(fresh, tmp_path / "ad", _base_identity(fresh))
    x = torch.randn(9, 6)
    with sampling(stochastic=False):
        assert torch.equal(model(x), fresh(x))
    assert torch.equal(sample_forward(model, x, 16, seed=3), sample_forward(fresh, x, 16, seed=3))
    other = ToyMLP()  # different base weights
    with pytest.raises(BaseModelMismatchError, match="another base model"):
        load_adapter(other, tmp_path / "ad", _base_identity(other))


def test_merge_adapters_on_a_model():
    torch.manual_seed(0)
    model = ToyMLP()
    inject_adapters(model, AdapterConfig(kind="lora", targets=["net.0", "net.2", "net.4"]))
    for n, p in model.named_parameters():
        if "adapter_B" in n:
            p.data.normal_()
    x = torch.randn(7, 6)
    before = model(x)
    merge_adapters(model)
    assert torch.allclose(model(x), before, atol=1e-5)
    unmerge_adapters(model)
    assert torch.allclose(model(x), before, atol=1e-5)


def test_plain_lora_matches_peft_on_the_same_weights():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    ours = ToyMLP()
    theirs = ToyMLP()
    theirs.load_state_dict(ours.state_dict())
    inject_adapters(
        ours, AdapterConfig(kind="lora", targets=["net.0", "net.2"], rank=4, lora_alpha=8)
    )
    pm = peft.get_peft_model(
        theirs,
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=["net.0", "net.2"], lora_dropout=0.0),
    )
    sd = pm.state_dict()
    for name in ("net.0", "net.2"):
        layer = ours.get_submodule(name)
        layer.adapter_B.data.normal_()
        a_key = next(k for k in sd if k.endswith(f"{name}.lora_A.default.weight"))
        b_key = next(k for k in sd if k.endswith(f"{name}.lora_B.default.weight"))
        pm.get_parameter(a_key).data.copy_(layer.adapter_A[0])
        pm.get_parameter(b_key).data.copy_(layer.adapter_B[0])
    x = torch.randn(10, 6)
    ours.eval()
    pm.eval()
    assert torch.allclose(ours(x), pm(x), atol=1e-6)


def test_extension_point_for_linear_like_layers():
    """A layer type that is not nn.Linear is refused until an adapter factory is registered for
    it."""
    from mofbalora.adapters import register_adapter_type
    from mofbalora.adapters.inject import ADAPTER_FACTORIES

    class ScaledLinear(nn.Module):  # stands for e.g. an SO(3)-linear or expert-mixture linear
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, 4))

        def forward(self, x):
            return 2 * x @ self.weight.T

    class ScaledLinearAdapter(nn.Module):
        def __init__(self, base, cfg):
            super().__init__()
            self.base_layer = base
            self.adapter_A = nn.Parameter(torch.randn(cfg.rank, 4))
            self.adapter_B = nn.Parameter(torch.zeros(4, cfg.rank))

        def forward(self, x):
            return self.base_layer(x) + 2 * (x @ self.adapter_A.T) @ self.adapter_B.T

    model = nn.Sequential(ScaledLinear())
    with pytest.raises(TypeError, match="ScaledLinear has no adapter"):
        inject_adapters(model, AdapterConfig(kind="lora", targets=["0"]))
    register_adapter_type(ScaledLinear, lambda base, cfg: ScaledLinearAdapter(base, cfg))
    try:
        summary = inject_adapters(model, AdapterConfig(kind="lora", targets=["0"], rank=2))
        assert summary.adapted == ["0"] and summary.n_trainable == 2 * (4 + 4)
        x = torch.randn(3, 4)
        assert torch.equal(model(x), model[0].base_layer(x))  # θ_B = 0: base output
    finally:
        ADAPTER_FACTORIES.pop(ScaledLinear)
