"""InfoWGAN-GP (paper §4, docs/paper.md §7): gradient penalty, step isolation, Q, training and loading."""

import json
import math

import numpy as np
import pytest
import torch

import factorvae
from factorvae.config import ConfigError, make_config
from factorvae.losses import gaussian_log_density, gradient_penalty
from factorvae.methods import METHODS, build_method
from factorvae.methods.infowgan_gp import InfoWGANGP
from factorvae.run.checkpoint import load_checkpoint
from factorvae.training.loop import resume, train
from helpers import assert_state_equal as _assert_equal
from helpers import params as _params
from helpers import same as _same

# one critic step per generator step keeps the step tests fast; the training tests use the default 5
TINY = {"batch_size": 4, "fc_width": 32, "noise_dim": 8, "n_critic": 1}


# in-process training beside other jobs: see conftest.one_thread
pytestmark = pytest.mark.usefixtures("one_thread")


def _method(**kw) -> InfoWGANGP:
    cfg = make_config(model="infowgan-gp", **{**TINY, **kw})
    torch.manual_seed(0)
    return build_method(cfg, 1, torch.Generator().manual_seed(0), torch.device("cpu"))


def _batches(b=4, seed=0):
    rng = np.random.default_rng(seed)
    return lambda: torch.from_numpy((rng.random((b, 1, 64, 64)) > 0.7).astype(np.float32))


def test_registered_under_its_cli_name():
    assert METHODS["infowgan-gp"] is InfoWGANGP and _method().kind == "gan"


def test_gradient_penalty_of_a_linear_critic_is_its_closed_form():
    # D(x) = w·x + b has gradient w everywhere, so GP = (‖w‖ − 1)² whatever the interpolates
    torch.manual_seed(1)
    w, b = torch.randn(3 * 5 * 5, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    real, fake = torch.rand(6, 3, 5, 5, dtype=torch.float64), torch.rand(6, 3, 5, 5, dtype=torch.float64)
    eps = torch.rand(6, dtype=torch.float64)
    gp = gradient_penalty(lambda x: x.flatten(1) @ w + b, real, fake, eps)
    assert gp.item() == pytest.approx((w.norm().item() - 1.0) ** 2, rel=1e-12)
    unit = w / w.norm()  # a 1-Lipschitz critic with unit gradient pays nothing
    assert gradient_penalty(lambda x: x.flatten(1) @ unit, real, fake, eps).item() == pytest.approx(0.0, abs=1e-12)


def test_gradient_penalty_trains_the_critic_not_its_inputs():
    critic = torch.nn.Linear(4, 1)
    real, fake = torch.rand(5, 4, requires_grad=True), torch.rand(5, 4, requires_grad=True)
    gradient_penalty(lambda x: critic(x).squeeze(1), real, fake, torch.rand(5)).backward()
    assert critic.weight.grad is not None and critic.weight.grad.abs().sum() > 0
    assert real.grad is None and fake.grad is None


def test_gradient_penalty_uses_one_interpolate_per_example():
    # a critic that sees only example 0: with eps = 1 there, the interpolate is the real image
    real, fake = torch.ones(3, 2), torch.zeros(3, 2)
    seen = []

    def critic(x):
        seen.append(x.detach().clone())
        return x.sum(1)

    gradient_penalty(critic, real, fake, torch.tensor([1.0, 0.0, 0.25]))
    assert torch.equal(seen[0], torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.25, 0.25]]))


def test_gaussian_log_density_matches_torch_distributions():
    x, mean, log_std = torch.randn(7, 3), torch.randn(7, 3), torch.randn(3)
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(x)
    assert torch.allclose(gaussian_log_density(x, mean, log_std), expected, atol=1e-6)


def test_critic_step_leaves_the_generator_bit_identical(monkeypatch):
    m = _method()
    g_before, c_before = _params(m.gen), _params(m.critic)
    seen = []
    critic_step = m.opt_critic.step

    def checked_step():
        seen.append([p.grad for p in m.gen.parameters()])  # fakes were made without a graph
        critic_step()

    monkeypatch.setattr(m.opt_critic, "step", checked_step)
    monkeypatch.setattr(m.opt_g, "step", lambda: None)  # leave out the generator's own update
    m.train_step(_batches())
    assert seen and all(g is None for g in seen[0])
    assert _same(g_before, _params(m.gen))
    assert not _same(c_before, _params(m.critic))  # and the critic did learn


def test_generator_step_leaves_the_critic_and_q_unchanged(monkeypatch):
    m = _method()
    monkeypatch.setattr(m.opt_critic, "step", lambda: None)  # whatever changes now is the generator step's doing
    g_before, c_before = _params(m.gen), _params(m.critic)
    m.train_step(_batches())
    assert _same(c_before, _params(m.critic))  # critic body, score head, Q head and Q's log-std
    assert not _same(g_before, _params(m.gen))


def test_generator_step_sends_no_gradient_to_the_critic(monkeypatch):
    m = _method()
    seen = []
    g_step = m.opt_g.step

    def checked_step():
        seen.append([p.grad for p in m.critic.parameters()])
        g_step()

    monkeypatch.setattr(m.opt_g, "step", checked_step)
    # the critic step clears its own gradients instead of stepping, so any critic gradient seen later is G's doing
    monkeypatch.setattr(m.opt_critic, "step", lambda: m.critic.zero_grad(set_to_none=True))
    m.train_step(_batches())
    assert seen and all(g is None for g in seen[0])


def _stripes(c: torch.Tensor) -> torch.Tensor:
    """Toy images that show code i as the grey level of the i-th 6-pixel stripe: c is readable from x."""
    x = torch.zeros(len(c), 1, 64, 64)
    for i in range(c.shape[1]):
        x[:, 0, 6 * i : 6 * i + 6, :] = ((c[:, i] + 1) / 2)[:, None, None]
    return x


def test_q_learns_the_codes_on_a_toy_problem():
    # Q's loss alone, stepped by the critic's optimizer as in train_step, on images that show c. The MI
    # lower bound H(c) + E[log Q(c|x)] starts below 0 (Q knows nothing) and must become positive, which
    # only a Q that reads c off the images can reach. (A fresh G barely shows c: pixel std ~1e-4.)
    m = _method(batch_size=16, q_std=0.3, lr_g=1e-3)
    h_c = 10 * math.log(2.0)  # entropy of U[−1, 1]^10
    bounds = []
    for _ in range(40):
        c, _ = m.sample_latents(16)
        log_q = m.log_q(c, m.critic(_stripes(c))[1])
        m.opt_critic.zero_grad(set_to_none=True)
        (-log_q).backward()
        m.opt_critic.step()
        bounds.append(h_c + log_q.item())
    assert np.mean(bounds[:5]) < 0 < np.mean(bounds[-5:])


def test_mi_term_reaches_the_generator():
    m = _method()
    c, z = m.sample_latents(4)
    (-m.log_q(c, m.critic(m.gen(c, z))[1])).backward(inputs=m.g_params)
    assert all(p.grad is not None for p in m.g_params)
    assert sum(float(p.grad.abs().sum()) for p in m.g_params) > 0


def test_fixed_q_std_is_not_learned():
    m = _method(q_std=0.5)
    assert "q_log_std" not in dict(m.critic.named_parameters())
    assert torch.allclose(m.critic.q_log_std, torch.full((10,), math.log(0.5)))
    m.train_step(_batches())
    assert torch.allclose(m.critic.q_log_std, torch.full((10,), math.log(0.5)))
    with pytest.raises(ConfigError, match="q_std must be > 0"):
        _method(q_std=0.0)


def test_train_step_returns_finite_detached_numbers():
    m = _method(n_critic=2)
    numbers = m.train_step(_batches())
    assert set(numbers) == {"loss", "critic_loss", "gp", "wasserstein", "mi"}
    for k, v in numbers.items():
        assert v.ndim == 0 and not v.requires_grad and math.isfinite(float(v)), k


def test_train_step_uses_n_critic_fresh_real_batches():
    m = _method(n_critic=3)
    calls = []
    base = _batches()

    def counting():
        calls.append(1)
        return base()

    m.train_step(counting)
    assert len(calls) == 3


def test_encode_and_decode_shapes_and_fixed_noise():
    m = _method()
    c_hat, none = m.encode(torch.rand(5, 1, 64, 64))
    assert c_hat.shape == (5, 10) and none is None
    c = torch.rand(3, 10) * 2 - 1
    x = m.decode(c)
    assert x.shape == (3, 1, 64, 64) and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x, m.gen(c, torch.zeros(3, 8)))  # decoding is G(c, z = 0), the same every call


@pytest.fixture
def gan_small(small):
    # two critic steps per generator step: still a loop over fresh batches, at 2/5 of the default's cost
    return {**small, "model": "infowgan-gp", "fc_width": 32, "noise_dim": 8, "n_critic": 2}


def test_train_and_load_give_codes_and_no_logvar(tmp_path, gan_small):
    out = train(make_config(steps=2, **gan_small), tmp_path / "r", progress=False)
    rec = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert {"step", "loss", "critic_loss", "gp", "wasserstein", "mi"} <= set(rec)
    model = factorvae.load(out)
    assert model.kind == "gan" and model.step == 2
    images = np.random.default_rng(0).random((5, 1, 64, 64)).astype(np.float32)
    c_hat, logvar = model.encode(images, batch_size=2)  # several batches: None must survive the join
    assert isinstance(c_hat, np.ndarray) and c_hat.shape == (5, 10) and logvar is None
    assert model.represent(images).shape == (5, 10)
    assert model.decode(np.zeros((3, 10), dtype=np.float32)).shape == (3, 1, 64, 64)


def test_resume_is_bit_identical_to_a_straight_run(tmp_path, gan_small):
    gan_small["checkpoint_every"] = 3  # resume from step 3: mid-way through a log window
    straight = train(make_config(steps=5, **gan_small), tmp_path / "a", progress=False)
    train(make_config(steps=3, **gan_small), tmp_path / "b", progress=False)
    resumed = resume(tmp_path / "b", steps=5, progress=False)
    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(resumed / "checkpoint.pt")
    for part in ("modules", "optimizers"):
        _assert_equal(a[part], b[part])
    assert torch.equal(a["torch_rng"], b["torch_rng"])

    def log(run):
        return [{k: v for k, v in json.loads(line).items() if k not in ("time", "steps_per_s")}
                for line in (run / "log.jsonl").read_text().splitlines()]

    assert log(straight) == log(resumed) and [r["step"] for r in log(resumed)] == [2, 4, 5]
