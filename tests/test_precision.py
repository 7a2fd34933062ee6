"""The one place that picks fast paths (kernels.for_device) and bf16 mixed precision (docs/performance.md).

nets.py holds the paper's appendix-A networks in stock layers; ``build_method`` hands each method to
``kernels.for_device``, which swaps in the fast layers (same Parameters, same state-dict keys), lays conv
weights out channels_last on CPU and fuses Adam; with ``precision="bf16"`` a training step computes the
networks in bfloat16 while weights, Adam states, network outputs, losses and logs stay float32.
"""

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

import factorvae
from factorvae import kernels
from factorvae.config import ConfigError, make_config
from factorvae.methods import build_method
from factorvae.methods.batched import BatchedVAE
from factorvae.methods.factorvae import FactorVAE
from factorvae.nets import Decoder, Discriminator
from factorvae.run.checkpoint import load_checkpoint
from helpers import assert_state_equal

CPU = torch.device("cpu")
BF16 = {"precision": "bf16"}

pytestmark = pytest.mark.usefixtures("one_thread")


def _batches(seed, n=8):
    rng = np.random.default_rng(seed)
    return lambda: torch.from_numpy((rng.random((n, 1, 64, 64)) > 0.7).astype(np.float32))


def _method(seed=0, **settings):
    torch.manual_seed(seed)
    return build_method(make_config(batch_size=8, **settings), 1, torch.Generator().manual_seed(seed), CPU)


def test_the_networks_are_stock_pytorch():
    assert type(Decoder().deconvs[-1]) is nn.ConvTranspose2d
    d = Discriminator()
    assert type(d.net) is nn.Sequential
    z = torch.randn(5, 10)
    assert torch.equal(d(z), d.net(z))


def test_for_device_swaps_in_fast_layers_that_hold_the_same_parameters():
    config = make_config(batch_size=8)
    torch.manual_seed(0)
    plain = FactorVAE(config, 1, torch.Generator(), CPU)  # the method as written, no fast path
    fast = _method()
    assert type(fast.decoder.deconvs[-1]) is kernels.ImageDeconv
    assert fast.encoder.convs[2].weight.is_contiguous(memory_format=torch.channels_last)
    for name, module in plain.modules.items():  # the same initial weights under the same keys
        assert_state_equal(module.state_dict(), fast.modules[name].state_dict())
    # the optimizers still step the modules' own Parameter objects, fused
    stepped = {id(p) for o in fast.optimizers.values() for g in o.param_groups for p in g["params"]}
    assert stepped == {id(p) for m in fast.modules.values() for p in m.parameters()}
    assert all(g["fused"] for o in fast.optimizers.values() for g in o.param_groups)


def test_off_the_cpu_only_adam_is_fused():
    torch.manual_seed(0)
    method = kernels.for_device(FactorVAE(make_config(batch_size=8), 1, torch.Generator(), CPU), torch.device("cuda"))
    assert type(method.decoder.deconvs[-1]) is nn.ConvTranspose2d
    assert method.encoder.convs[2].weight.is_contiguous()
    assert all(g["fused"] for o in method.optimizers.values() for g in o.param_groups)


@pytest.mark.parametrize("channels", [1, 3])
def test_bf16_patch_deconv_equals_the_stock_layer_under_autocast(channels):
    torch.manual_seed(channels)
    stock = nn.ConvTranspose2d(32, channels, 4, 2, 1).to(memory_format=torch.channels_last)
    fast = kernels.ImageDeconv.replacing(copy.deepcopy(stock))
    x = torch.relu(torch.randn(4, 32, 8, 8)).contiguous(memory_format=torch.channels_last)
    outs, grads = [], []
    for module in (stock, fast):
        xi = x.clone().requires_grad_()
        with kernels.precision_scope(CPU, "bf16"):
            out = module(xi.bfloat16())
        out.float().square().sum().backward()
        outs.append(out.float())
        grads.append([xi.grad, *(p.grad for p in module.parameters())])
    # both ran in bf16: the same sums to bf16 rounding (8 bits), far from fp32's agreement
    torch.testing.assert_close(outs[1], outs[0], rtol=2e-2, atol=2e-2 * outs[0].abs().max().item())
    for a, b in zip(*grads, strict=True):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=5e-2, atol=5e-2 * b.abs().max().item())


def _dtypes_seen(method, layers):
    seen = []
    hooks = [layer.register_forward_hook(lambda m, i, o: seen.append(o.dtype)) for layer in layers]
    return seen, hooks


@pytest.mark.parametrize("model", ["factorvae", "betavae", "infowgan-gp"])
def test_a_bf16_step_computes_in_bf16_and_keeps_float32_state(model):
    method = _method(model=model, d_hidden=64, n_critic=1, **BF16)
    net = method.modules["encoder" if model != "infowgan-gp" else "critic"]
    seen, hooks = _dtypes_seen(method, [net.convs[0], net.fc[0]])
    numbers = method.train_step(_batches(1))
    assert seen and set(seen) == {torch.bfloat16}
    assert all(v.dtype == torch.float32 for v in numbers.values())
    for opt in method.optimizers.values():
        for p, state in opt.state.items():
            assert p.dtype == p.grad.dtype == state["exp_avg"].dtype == torch.float32
    # outside a training step (evaluation, traversals) the networks compute in float32
    seen.clear()
    with torch.no_grad():
        method.encode(torch.rand(2, 1, 64, 64))
    for h in hooks:
        h.remove()
    assert set(seen) == {torch.float32}


def test_a_bf16_step_is_the_fp32_step_to_bf16_rounding():
    runs = {p: _method(precision=p, d_hidden=64) for p in ("fp32", "bf16")}
    before = {p: copy.deepcopy(m.encoder.state_dict()) for p, m in runs.items()}
    numbers = {p: m.train_step(_batches(2)) for p, m in runs.items()}
    assert_state_equal(before["fp32"], before["bf16"])
    torch.testing.assert_close(numbers["bf16"]["loss"], numbers["fp32"]["loss"], rtol=1e-2, atol=0)
    assert not torch.equal(numbers["bf16"]["loss"], numbers["fp32"]["loss"])  # bf16 really ran
    for key, w in runs["fp32"].encoder.state_dict().items():
        # Adam moves each weight by about lr = 1e-4 in its first step, whatever the gradient's size:
        # a gradient of the right sign gives the same step
        moved = (runs["bf16"].encoder.state_dict()[key] - w).abs().max()
        assert moved <= 2.1e-4, key


def test_bf16_resumes_bit_identically_and_keeps_its_precision(tmp_path, small):
    settings = {**small, **BF16, "checkpoint_every": 3, "log_every": 2}
    straight = factorvae.train(make_config(steps=5, **settings), tmp_path / "a", progress=False)
    factorvae.train(make_config(steps=3, **settings), tmp_path / "b", progress=False)
    resumed = factorvae.resume(tmp_path / "b", steps=5, progress=False)
    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(resumed / "checkpoint.pt")
    for part in ("modules", "optimizers", "window"):
        assert_state_equal(a[part], b[part])
    assert json.loads((resumed / "config.json").read_text())["precision"] == "bf16"
    assert json.loads(b["config"])["precision"] == "bf16"


@pytest.mark.parametrize("mode", ["loop", "grouped"])
def test_a_bf16_batched_member_trains_as_its_single_run(mode):
    configs = [make_config(model="factorvae", seed=s, gamma=g, batch_size=8, d_hidden=64, **BF16)
               for s, g in ((0, 10.0), (1, 40.0))]
    singles = []
    for config in configs:
        torch.manual_seed(config.seed)
        singles.append((build_method(config, 1, torch.Generator().manual_seed(config.seed + 7), CPU),
                        _batches(config.seed)))
    model = BatchedVAE(configs, 1, [torch.Generator().manual_seed(c.seed + 7) for c in configs], CPU, mode=mode)
    draws = [_batches(c.seed) for c in configs]  # each member's own minibatches, as its single run draws them
    for _ in range(3):
        model.train_step(lambda: torch.stack([d() for d in draws]))
    for k, (method, draw) in enumerate(singles):
        for _ in range(3):
            method.train_step(draw)
        state = model.member_state(k)["modules"]
        for name, module in method.modules.items():
            for key, value in module.state_dict().items():
                if mode == "loop":  # the same kernels: bit for bit
                    assert torch.equal(state[name][key], value), f"{name}.{key}"
                else:  # grouped kernels sum in another order: an Adam step (±lr = 1e-4 early on) may flip
                    # where a gradient is near 0, but only there (a wrong gradient flips about half)
                    diff = (state[name][key] - value).abs()
                    assert diff.max() <= 6e-4 and (diff > 1e-4).float().mean() <= 0.01, f"{name}.{key}"


def test_precision_is_a_checked_setting():
    assert make_config().precision == "fp32" and make_config(precision="bf16").precision == "bf16"
    with pytest.raises(ConfigError, match="unknown precision 'fp16'; choose one of: fp32, bf16"):
        make_config(precision="fp16")


def test_bf16_without_bf16_instructions_says_so_once(tmp_path, capsys, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert kernels.cpu_bf16_flags(cpuinfo) == []
    cpuinfo.write_text("flags\t\t: fpu avx512f avx512_bf16 amx_bf16\n")
    assert kernels.cpu_bf16_flags(cpuinfo) == ["avx512_bf16", "amx_bf16"]
    assert kernels.cpu_bf16_flags(tmp_path / "missing") == []
    monkeypatch.setattr(kernels, "cpu_bf16_flags", lambda: [])
    monkeypatch.setattr(kernels, "_warned", set())
    _method(**BF16)
    _method(**BF16)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no bf16 instructions (avx512_bf16 or amx_bf16)" in err
    _method()  # fp32 says nothing
    assert capsys.readouterr().err == ""


def test_float32_outputs_hook_leaves_non_float_outputs_alone():
    half = torch.ones(2, dtype=torch.bfloat16)
    out = kernels._float32_outputs(nn.Identity(), (), (half, None, torch.ones(2).long()))
    assert out[0].dtype == torch.float32 and out[1] is None and out[2].dtype == torch.long
    assert kernels._float32_outputs(nn.Identity(), (), half).dtype == torch.float32


def test_the_cli_takes_precision_and_a_resume_keeps_it(tmp_path, capsys):
    from factorvae.cli import main

    small = ["--quiet", "--set", "batch_size=8", "--set", "d_hidden=64", "--set", "log_every=1"]
    run = tmp_path / "run"
    assert main(["train", "--steps", "2", "--out", str(run), "--set", "precision=bf16", *small]) == 0
    assert main(["train", "--resume", str(run), "--steps", "3", "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["precision"] == "bf16"
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert main(["train", "--steps", "2", "--out", str(tmp_path / "bad"), "--set", "precision=fp16", *small]) != 0
    err = capsys.readouterr().err
    assert "unknown precision 'fp16'; choose one of: fp32, bf16" in err and not (tmp_path / "bad").exists()
