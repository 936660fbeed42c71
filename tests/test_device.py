"""Device handling: names, batch placement, and draws that do not depend on where the model runs."""

from __future__ import annotations

import pytest
import torch

from mofbalora.adapters import BaLoRALinear, sampling, seeded_generator
from mofbalora.adapters.context import draw
from mofbalora.backbones.base import resolve_device, to_device


def test_device_names_resolve_or_name_the_choices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match=r"choose from \['cpu', 'cuda', 'auto'\]"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


class _Graph:
    """Stands for a CHGNet graph / fairchem AtomicData: an object that knows how to move itself."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def to(self, device):
        return _Graph(self.x.to(device))


def test_batches_move_whole_to_the_device():
    batch = {
        "n_atoms": torch.tensor([2, 3]),
        "graphs": [_Graph(torch.ones(2)), _Graph(torch.ones(3))],
        "pair": (torch.zeros(1), "label"),
        "name": "x",
    }
    moved = to_device(batch, torch.device("meta"))
    assert moved["n_atoms"].device.type == "meta"
    assert all(g.x.device.type == "meta" for g in moved["graphs"])
    assert (
        moved["pair"][0].device.type == "meta"
        and moved["pair"][1] == "label"
        and moved["name"] == "x"
    )
    cpu = to_device(batch, torch.device("cpu"))  # on the CPU nothing is copied
    assert cpu["graphs"][0] is batch["graphs"][0] and cpu["n_atoms"] is batch["n_atoms"]


def test_seeded_draws_are_made_on_the_cpu_and_placed_on_the_device():
    with sampling(generator=seeded_generator(7)):
        on_meta = draw("randn", (4, 3), device=torch.device("meta"))
    with sampling(generator=seeded_generator(7)):
        a = draw("randn", (4, 3), device=torch.device("cpu"))
    b = torch.randn((4, 3), generator=seeded_generator(7))
    assert on_meta.device.type == "meta" and on_meta.shape == (4, 3)
    assert torch.equal(a, b)  # the very numbers torch draws from that seed


def test_balora_layer_samples_do_not_change_when_drawn_through_the_context():
    torch.manual_seed(0)
    layer = BaLoRALinear(torch.nn.Linear(6, 5), rank=3)
    torch.nn.init.normal_(layer.adapter_B)
    x = torch.randn(8, 6)
    with torch.no_grad(), sampling(stochastic=True, generator=seeded_generator(1)):
        y1 = layer(x)
    with torch.no_grad(), sampling(stochastic=True, generator=seeded_generator(1)):
        y2 = layer(x)
    assert torch.equal(y1, y2) and not torch.equal(y1, layer.base_layer(x))


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without a GPU"
)
def test_cli_asks_for_a_gpu_that_is_not_there(sample_cifs, tmp_path, capsys):
    from mofbalora.cli import main

    code = main(
        [
            "screen",
            str(sample_cifs[0]),
            "--device",
            "cuda",
            "--out",
            str(tmp_path / "r.csv"),
            "--quiet",
        ]
    )
    assert code == 2 and "no CUDA GPU" in capsys.readouterr().err
