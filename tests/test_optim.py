"""optim.param_groups: the param_groups torch.optim writes, written out without constructing an optimizer."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from diffmem.optim import fused_adam, param_groups


def torch_param_groups(params, cfg) -> list[dict]:
    if cfg.optimizer == "adam":
        fused = fused_adam(params[0].device)
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None,
                               foreach=None if fused else True)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True)
    return opt.state_dict()["param_groups"]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-4])
def test_param_groups_are_the_ones_torch_optim_writes(optimizer, weight_decay):
    params = [torch.nn.Parameter(torch.zeros(shape)) for shape in [(3, 2), (2,), (4,), (2, 2)]]
    cfg = SimpleNamespace(optimizer=optimizer, lr=2e-3, momentum=0.95, weight_decay=weight_decay)
    got, want = param_groups(params, cfg), torch_param_groups(params, cfg)
    assert got == want
    assert [list(g) for g in got] == [list(g) for g in want]  # the same keys in the same order
    assert [type(v) for v in got[0].values()] == [type(v) for v in want[0].values()]


def test_param_groups_do_not_import_dynamo():
    code = ("import sys, torch; from types import SimpleNamespace as S; from diffmem.optim import param_groups; "
            "param_groups([torch.nn.Parameter(torch.zeros(2))], S(optimizer='adam', lr=1e-3, momentum=0.9, "
            "weight_decay=0.0)); print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
