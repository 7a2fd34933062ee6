"""Algorithm 2's gradient isolation and the methods' objectives (paper §3; docs/paper.md §2)."""

import io

import numpy as np
import pytest
import torch

from factorvae.config import make_config
from factorvae.methods import build_method
from helpers import params as _params
from helpers import same as _same


def _method(model="factorvae", **kw):
    cfg = make_config(model=model, batch_size=8, **kw)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    return build_method(cfg, 1, g, torch.device("cpu"))


def _batches(seed=0, b=8):
    rng = np.random.default_rng(seed)
    return lambda: torch.from_numpy((rng.random((b, 1, 64, 64)) > 0.7).astype(np.float32))


def test_vae_step_leaves_discriminator_unchanged_and_gradient_free(monkeypatch):
    m = _method()
    before = _params(m.discriminator)
    seen = []
    vae_step = m.opt_vae.step

    def checked_step():
        # at the VAE update, D has no gradient at all: backward(inputs=...) sent it only to the VAE
        seen.append([p.grad for p in m.discriminator.parameters()])
        vae_step()

    monkeypatch.setattr(m.opt_vae, "step", checked_step)
    monkeypatch.setattr(m.opt_d, "step", lambda: None)  # leave out the discriminator's own update
    m.train_step(_batches())
    assert seen and all(g is None for g in seen[0])
    assert _same(before, _params(m.discriminator))


def test_discriminator_step_leaves_encoder_and_decoder_bit_identical(monkeypatch):
    m = _method()
    enc, dec = _params(m.encoder), _params(m.decoder)
    # make the VAE optimizer step a no-op: whatever changes now is the discriminator step's doing
    monkeypatch.setattr(m.opt_vae, "step", lambda: None)
    d_before = _params(m.discriminator)
    m.train_step(_batches())
    assert _same(enc, _params(m.encoder)) and _same(dec, _params(m.decoder))
    assert not _same(d_before, _params(m.discriminator))  # and D did learn


def test_tc_term_sends_gradient_to_the_encoder(monkeypatch):
    """Through train_step itself: from equal weights, data and noise, γ = 40 and γ = 0 give the encoder
    different gradients and the decoder equal ones (the TC term reaches the encoder through D, never the
    decoder); a ``z.detach()`` before D in the method would make the encoder's equal too."""
    grads = {}
    for gamma in (0.0, 40.0):
        m = _method(gamma=gamma)
        seen = []
        monkeypatch.setattr(m.opt_vae, "step", lambda m=m, seen=seen: seen.append(
            ([p.grad.clone() for p in m.encoder.parameters()], [p.grad.clone() for p in m.decoder.parameters()])))
        m.train_step(_batches(3))
        grads[gamma] = seen[0]
    (enc0, dec0), (enc40, dec40) = grads[0.0], grads[40.0]
    assert _same(dec0, dec40)
    assert not _same(enc0, enc40) and all(a.shape == b.shape for a, b in zip(enc0, enc40, strict=True))


def test_factorvae_uses_two_independent_minibatches():
    m = _method()
    calls = []
    base = _batches()

    def counting():
        calls.append(1)
        return base()

    m.train_step(counting)
    assert len(calls) == 2
    m_same = _method(same_batch=True)
    calls.clear()
    m_same.train_step(counting)
    assert len(calls) == 1


def test_betavae_weights_kl_by_beta():
    out = {}
    for model, beta in (("vae", 16.0), ("betavae", 4.0)):
        m = _method(model=model, beta=beta)
        numbers = m.train_step(_batches(5))
        out[model] = numbers
        weight = 1.0 if model == "vae" else beta
        torch.testing.assert_close(numbers["loss"], numbers["recon"] + weight * numbers["kl"])
    assert "tc" not in out["vae"]


def test_factorvae_loss_is_elbo_plus_gamma_tc():
    m = _method(gamma=10.0)
    n = m.train_step(_batches(2))
    torch.testing.assert_close(n["loss"], n["recon"] + n["kl"] + 10.0 * n["tc"])
    assert 0.0 <= float(n["d_acc"]) <= 1.0
    assert n["kl_per_dim"].shape == (10,)
    torch.testing.assert_close(n["kl_per_dim"].sum(), n["kl"])


@pytest.mark.parametrize("model", ["vae", "betavae", "factorvae"])
def test_reconstruction_falls_in_a_short_run(model):
    m = _method(model, lr=1e-3)  # 10x the paper's lr so that 30 steps show learning
    rng = np.random.default_rng(0)
    from factorvae.data import load

    data = load("dsprites")
    batches = lambda: torch.from_numpy(data.sample_observations(16, rng))  # noqa: E731
    first = [float(m.train_step(batches)["recon"]) for _ in range(3)]
    for _ in range(30):
        last = float(m.train_step(batches)["recon"])
    assert last < 0.7 * np.mean(first)


def test_paper_optimizer_and_discriminator_settings():
    m = _method()
    assert m.opt_vae.defaults["lr"] == 1e-4 and m.opt_vae.defaults["betas"] == (0.9, 0.999)
    assert m.opt_d.defaults["lr"] == 1e-4 and m.opt_d.defaults["betas"] == (0.5, 0.9)
    n_linear = sum(isinstance(x, torch.nn.Linear) for x in m.discriminator.modules())
    assert n_linear == 7 and m.discriminator.net[0].out_features == 1000


def test_method_state_roundtrip_continues_the_same_training():
    """The modules' and optimizers' state dicts, through torch.save and back into a method built from another
    seed, hold everything a step depends on: the next step from both is bit-identical (a state that left out
    Adam's moments, or a module, would make it differ)."""
    a = _method()
    for _ in range(2):
        a.train_step(_batches(1))
    buf = io.BytesIO()
    torch.save({"modules": {k: v.state_dict() for k, v in a.modules.items()},
                "optimizers": {k: v.state_dict() for k, v in a.optimizers.items()}}, buf)
    torch.manual_seed(7)
    b = build_method(make_config(model="factorvae", batch_size=8), 1, torch.Generator().manual_seed(9),
                     torch.device("cpu"))
    assert not _same(_params(a.encoder), _params(b.encoder))
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    for k, module in b.modules.items():
        module.load_state_dict(state["modules"][k])
    for k, opt in b.optimizers.items():
        opt.load_state_dict(state["optimizers"][k])
    b.generator.set_state(a.generator.get_state())
    a.train_step(_batches(2))
    b.train_step(_batches(2))
    for k in a.modules:
        assert _same(_params(a.modules[k]), _params(b.modules[k])), k


def test_glorot_init_gives_tensorflow_bounds_and_zero_biases():
    torch.manual_seed(0)
    m = build_method(make_config(model="factorvae", init="glorot"), 1, torch.Generator(), torch.device("cpu"))
    layers = [x for mod in m.modules.values() for x in mod.modules()
              if isinstance(x, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(layers) == 6 + 6 + 7  # encoder 4 conv + 2 FC; decoder 2 FC + 4 deconv; D 6 hidden + 1 output
    for layer in layers:
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(layer.weight)
        bound = (6 / (fan_in + fan_out)) ** 0.5  # Glorot-uniform: U(-bound, bound)
        w = layer.weight.detach().abs()
        assert w.max() <= bound and w.max() > 0.8 * bound
        assert torch.count_nonzero(layer.bias) == 0
    # torch's default (init="pytorch") draws non-zero biases and narrower weights: the two really differ
    torch.manual_seed(0)
    default = build_method(make_config(model="factorvae"), 1, torch.Generator(), torch.device("cpu"))
    assert torch.count_nonzero(default.encoder.convs[0].bias) > 0


def test_unknown_init_is_a_one_line_error():
    from factorvae.config import ConfigError

    with pytest.raises(ConfigError, match="unknown init 'he'; choose one of: pytorch, glorot"):
        make_config(init="he")
