"""arch time_mlp: the network of arXiv 2505.17638's synthetic runs (their TinyModels.SimpleTimeModel)."""

import numpy as np
import pytest
import torch

from diffmem.config import ConfigError, ModelConfig
from diffmem.models import build_denoiser, count_parameters
from diffmem.models.mlp import TimeMLP, encoding_frequencies, timestep_encoding
from diffmem.resources import model_size


def paper_encoding_table(d_model: int, maxlen: int, min_freq: float = 1e-4) -> np.ndarray:
    """Their PositionalEncoding._get_pos_enc, written from the paper's code: a [maxlen, d_model] table."""
    position = np.arange(maxlen)
    freqs = min_freq ** (2 * (np.arange(d_model) // 2) / d_model)
    table = position[:, None] * freqs[None]
    table[:, ::2] = np.cos(table[:, ::2])
    table[:, 1::2] = np.sin(table[:, 1::2])
    return table


def test_the_paper_size_has_their_parameter_count():
    """SimpleTimeModel(d=8, d_model=128, n_blocks=3) has 102,024 parameters; the resource model agrees."""
    net = build_denoiser(ModelConfig(arch="time_mlp", width=128, depth=3, parameterization="ddpm"), data_shape=(8,))
    assert count_parameters(net) == 102_024
    assert model_size({"arch": "time_mlp", "width": 128, "depth": 3}, (8,)).params == 102_024
    assert model_size({"arch": "time_mlp", "width": 32, "depth": 2}, (5,)).params == count_parameters(
        TimeMLP(dim=5, width=32, depth=2))


def relabel(table: np.ndarray) -> np.ndarray:
    """Their interleaved columns (cos, sin, cos, sin, ...) in diffmem's order [all cos | all sin]."""
    return np.concatenate([table[..., 0::2], table[..., 1::2]], axis=-1)


def test_encoding_is_their_table_at_integer_timesteps():
    t = torch.arange(1000, dtype=torch.float32)
    got = timestep_encoding(t, encoding_frequencies(128)).double().numpy()
    want = relabel(paper_encoding_table(128, 1000))
    # float32 arguments up to 999 rad: the phase is exact to ~1e-4
    assert np.abs(got - want).max() < 2e-4
    assert np.abs(got[:100] - want[:100]).max() < 1e-5


def test_forward_is_the_documented_composition():
    """out(h_depth), h_i = LayerNorm(h + fc2(gelu(fc1(h + PE)))), h_0 = inp(x): written out by hand."""
    torch.manual_seed(0)
    net = TimeMLP(dim=4, width=16, depth=2).eval()
    x, c = torch.randn(5, 4), torch.rand(5) * 999
    pe = torch.tensor(relabel(paper_encoding_table(16, 1000)), dtype=torch.float32)[c.round().long()]
    c = c.round()
    h = x @ net.inp.weight.T + net.inp.bias
    for b in net.blocks:
        z = torch.nn.functional.gelu((h + pe) @ b.fc1.weight.T + b.fc1.bias) @ b.fc2.weight.T + b.fc2.bias
        u = h + z
        h = (u - u.mean(-1, keepdim=True)) / torch.sqrt(u.var(-1, unbiased=False, keepdim=True) + 1e-5)
        h = h * b.norm.weight + b.norm.bias
    want = h @ net.out.weight.T + net.out.bias
    with torch.no_grad():
        torch.testing.assert_close(net(x, c), want, rtol=1e-4, atol=1e-4)


def test_odd_width_is_a_config_error(tmp_path):
    from diffmem.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("experiments:\n  e:\n    data: {dataset: gmm, dim: 8, n_train: [8], seeds: [0], pool_size: 64, n_test: 16}\n"
                   "    model: {arch: time_mlp, width: [32, 33], depth: 3, parameterization: ddpm}\n"
                   "    sample: {sampler: ddim}\n")
    with pytest.raises(ConfigError, match=r"model.width.*even"):
        load_config(cfg)
    with pytest.raises(ValueError, match="even width"):
        TimeMLP(dim=2, width=7)


def test_learned_embedding_ablation_swaps_only_what_is_added():
    """time_mlp_emb: the paper's blocks with mlp's learned embedding where PE was; counted by resources too."""
    cfg = ModelConfig(arch="time_mlp_emb", width=32, depth=2, emb_dim=8, parameterization="ddpm")
    net = build_denoiser(cfg, data_shape=(5,)).net
    assert not hasattr(net, "freqs") and all(hasattr(b, "emb") for b in net.blocks)
    assert count_parameters(net) == model_size({"arch": "time_mlp_emb", "width": 32, "depth": 2, "emb_dim": 8},
                                               (5,)).params
    torch.manual_seed(0)
    x, c = torch.randn(4, 5), torch.rand(4) * 999
    e = torch.nn.functional.silu(net.emb_mlp(net.embed(c)))
    h = net.inp(x)
    for b in net.blocks:
        h = b.norm(h + b.fc2(torch.nn.functional.gelu(b.fc1(h + b.emb(e)))))
    with torch.no_grad():
        assert torch.equal(net(x, c), net.out(h))
