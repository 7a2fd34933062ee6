"""The optimised training step computes what plain Algorithm 2 computes (paper §3, Algorithm 2).

The plain reference below is the straightforward code: NCHW layout, stock nn.ConvTranspose2d, every
gradient computed, a second D forward on z.detach(), for-loop Adam. From the same weights, optimizer
state, minibatches and noise, one step of each must leave the same weights up to float rounding.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from factorvae.config import make_config
from factorvae.evaluate import _encode_fn
from factorvae.kernels import ImageDeconv, InferenceEncoder, _PatchDeconv
from factorvae.losses import bernoulli_nll, discriminator_loss, kl_normal, permute_dims, reparameterize, tc_from_logits
from factorvae.methods import build_method
from factorvae.nets import Encoder


def _batches(seed):
    rng = np.random.default_rng(seed)
    return lambda: torch.from_numpy((rng.random((16, 1, 64, 64)) > 0.7).astype(np.float32))


def _plain_copy(method):
    """The method's networks in NCHW with a stock last layer, and for-loop Adams with its optimizer state."""
    nets = {k: copy.deepcopy(m).to(memory_format=torch.contiguous_format) for k, m in method.modules.items()}
    last = nets["decoder"].deconvs[-1]
    stock = nn.ConvTranspose2d(last.in_channels, last.out_channels, 4, 2, 1)
    stock.load_state_dict(last.state_dict())
    nets["decoder"].deconvs[-1] = stock
    opts = {}
    for name, params in (("vae", [*nets["encoder"].parameters(), *nets["decoder"].parameters()]),
                         ("discriminator", list(nets["discriminator"].parameters()))):
        opt = torch.optim.Adam(params, foreach=False)
        opt.load_state_dict(copy.deepcopy(method.optimizers[name].state_dict()))  # its own moment tensors
        for group in opt.param_groups:
            group.update(fused=None, foreach=False)  # the plain per-tensor update
        opts[name] = opt
    return nets, opts


def _plain_step(nets, opts, gen, next_batch, gamma, same_batch):
    enc, dec, disc = nets["encoder"], nets["decoder"], nets["discriminator"]
    x = next_batch()
    mu, logvar = enc(x)
    z = reparameterize(mu, logvar, gen)
    vae_loss = bernoulli_nll(dec(z), x) + kl_normal(mu, logvar).mean(0).sum() + gamma * tc_from_logits(disc(z))
    opts["vae"].zero_grad()
    vae_loss.backward()  # D's gradients too; they are cleared before the D update
    opts["vae"].step()
    with torch.no_grad():
        if same_batch:
            z_other = z
        else:
            mu2, logvar2 = enc(next_batch())
            z_other = reparameterize(mu2, logvar2, gen)
        z_perm = permute_dims(z_other, gen)
    d_loss = discriminator_loss(disc(z.detach()), disc(z_perm))
    opts["discriminator"].zero_grad()
    d_loss.backward()
    opts["discriminator"].step()
    return vae_loss.detach(), d_loss.detach()


@pytest.mark.parametrize("same_batch", [False, True])
def test_one_step_matches_the_plain_reference(same_batch):
    torch.manual_seed(0)
    cfg = make_config(batch_size=16, same_batch=same_batch)
    method = build_method(cfg, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    warm = _batches(1)
    for _ in range(3):  # a few steps first, so that Adam's moments are not at their start values
        method.train_step(warm)
    nets, opts = _plain_copy(method)
    gen = torch.Generator().manual_seed(0)
    gen.set_state(method.generator.get_state())

    numbers = method.train_step(_batches(2))
    vae_loss, d_loss = _plain_step(nets, opts, gen, _batches(2), cfg.gamma, same_batch)

    torch.testing.assert_close(numbers["loss"], vae_loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(numbers["d_loss"], d_loss, rtol=1e-5, atol=0)
    for name, module in method.modules.items():
        for (key, ours), theirs in zip(module.state_dict().items(), nets[name].state_dict().values(), strict=True):
            # weights ~1e-2 move by ~lr = 1e-4 a step; rounding-order noise is orders of magnitude below both
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7, msg=f"{name}.{key}")


def test_library_nets_run_channels_last_on_cpu():
    method = build_method(make_config(batch_size=4), 1, torch.Generator(), torch.device("cpu"))
    conv = method.encoder.convs[2].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert all(g.get("fused") for o in method.optimizers.values() for g in o.param_groups)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_image_deconv_equals_conv_transpose(channels, layout):
    torch.manual_seed(channels)
    layer = ImageDeconv(32, channels)
    x = torch.relu(torch.randn(4, 32, 8, 8)).contiguous(memory_format=layout).requires_grad_()
    grad = torch.randn(4, channels, 16, 16)
    ours = layer(x)
    (ours * grad).sum().backward()
    ours_grads = [x.grad, layer.weight.grad, layer.bias.grad]
    x.grad = layer.weight.grad = layer.bias.grad = None
    ref = F.conv_transpose2d(x, layer.weight, layer.bias, stride=2, padding=1)
    (ref * grad).sum().backward()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(ours_grads, [x.grad, layer.weight.grad, layer.bias.grad], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_patch_deconv_gradients_in_double_precision():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)  # non-square: rows and columns differ
    w = torch.randn(3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_PatchDeconv.apply, (x, w, b))
    assert torch.autograd.gradgradcheck(_PatchDeconv.apply, (x, w, b))  # InfoWGAN-GP's penalty may need it


@pytest.mark.parametrize("channels,width", [(1, 128), (3, 256)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_inference_encoder_equals_the_module(channels, width, layout):
    torch.manual_seed(channels)
    encoder = Encoder(channels, 10, width).to(memory_format=layout).eval()
    fast = InferenceEncoder(encoder)
    assert fast.fast and len(fast.layers) == 4  # the oneDNN path ran, not the fallback
    for n in (1, 127, 128, 129, 300):  # chunks of 128: below, at and across chunk edges
        x = torch.rand(n, channels, 64, 64)
        with torch.inference_mode():
            ref_mu, ref_logvar = encoder(x)
        mu, logvar = fast(x)
        assert mu.shape == (n, 10) and logvar.shape == (n, 10)
        torch.testing.assert_close(mu, ref_mu, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(logvar, ref_logvar, rtol=1e-5, atol=1e-6)


def test_inference_encoder_falls_back_for_float64():
    encoder = Encoder().double()
    fast = InferenceEncoder(encoder)
    x = torch.rand(3, 1, 64, 64, dtype=torch.float64)
    assert not fast.fast and fast(x)[0].dtype == torch.float64
    with torch.inference_mode():
        assert torch.equal(fast(x)[0], encoder(x)[0])


def test_evaluation_encodes_with_the_current_weights():
    """Periodic evaluation during training must not score a stale copy of the encoder."""
    method = build_method(make_config(batch_size=4), 1, torch.Generator(), torch.device("cpu"))
    obs = np.random.default_rng(0).random((5, 1, 64, 64), dtype=np.float32)
    before = _encode_fn(method, torch.device("cpu"))(obs)[0]
    with torch.no_grad():
        method.encoder.fc[2].bias.add_(1.0)
    after = _encode_fn(method, torch.device("cpu"))(obs)[0]
    np.testing.assert_allclose(after, before + 1.0, rtol=1e-5, atol=1e-5)
