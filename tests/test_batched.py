"""K runs trained as one batched model train as the K single runs do (paper §3, Algorithm 2).

The reference is each member's single run: ``torch.manual_seed(seed)``, its noise generator seeded with
``noise_seed(seed)``, its numpy sampler ``default_rng(seed)``, and ``build_method(...).train_step`` (member 0
also through the public ``factorvae.train``, read back from its checkpoint). The "loop" mode runs the
single networks' own kernels and must match bit for bit after 50 steps, weights and Adam state. The
"grouped" mode sums in other orders: the largest per-tensor relative difference max|batched − single| /
max|single| over weights and Adam moments measured 1.0e-5–5.6e-5 for every member after 1 to 10 steps (β-VAE
1.0e-5–1.6e-5), hence GROUPED_TOLERANCE = 1e-4 at 10 steps. Later one member can drift further: in member 2
(seed 2) one ReLU channel of the encoder's last conv dies near step 12 in one run and not in the other
(its gradient is then exactly 0 in one and not in the other), and its weights differ by 6e-2 at step 50;
the others stay at 1.4e-5.
"""

import copy
import functools

import numpy as np
import pytest
import torch

import factorvae
from factorvae.config import make_config
from factorvae.data import load
from factorvae.methods import build_method
from factorvae.methods.batched import BatchedVAE

CPU = torch.device("cpu")
STEPS, GROUPED_STEPS, BATCH = 50, 10, 8
GROUPED_TOLERANCE = 1e-4  # max per-tensor relative difference after GROUPED_STEPS steps (measured 5.6e-5)
# paper encoder and decoder, a narrower discriminator (as tests/conftest.py's SMALL), the paper's γ values
SETTINGS = {"batch_size": BATCH, "d_hidden": 64, "steps": STEPS}
FACTOR = [make_config(model="factorvae", seed=s, gamma=g, **SETTINGS) for s, g in ((0, 10.0), (1, 40.0), (2, 40.0))]
BETA = [make_config(model="betavae", seed=s, beta=b, **SETTINGS) for s, b in ((0, 1.0), (1, 4.0))]

pytestmark = pytest.mark.usefixtures("one_thread")


def noise_seed(seed: int) -> int:
    """The single run's noise-generator seed (as the training loop derives it)."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])


@functools.cache
def dsprites():
    return load("dsprites")


def streams(configs):
    """Each member's noise generator and numpy sampler, as its single run makes them."""
    generators = [torch.Generator().manual_seed(noise_seed(c.seed)) for c in configs]
    return generators, [np.random.default_rng(c.seed) for c in configs]


def stacked_batches(rngs, change=None):
    """batches() for a batched model: member k's minibatch from rngs[k]; ``change`` may edit the stack."""

    def batches():
        x = torch.stack([torch.from_numpy(dsprites().sample_observations(BATCH, rng)) for rng in rngs])
        return x if change is None else change(x)

    return batches


def single_run(config, steps=STEPS):
    """The member's single run: {step: copies of its (modules, optimizers) state dicts} after GROUPED_STEPS
    and ``steps`` steps, and its first step's numbers."""
    torch.manual_seed(config.seed)
    (generator,), (rng,) = streams([config])
    method = build_method(config, 1, generator, CPU)
    states, numbers = {}, []
    for step in range(1, steps + 1):
        numbers.append(method.train_step(lambda: torch.from_numpy(dsprites().sample_observations(BATCH, rng))))
        if step in (GROUPED_STEPS, steps):
            states[step] = copy.deepcopy({"modules": {k: m.state_dict() for k, m in method.modules.items()},
                                          "optimizers": {k: o.state_dict() for k, o in method.optimizers.items()}})
    return states, numbers[0]


@functools.cache
def public_run(tmp: str):
    """Member 0 of FACTOR through factorvae.train: its checkpoint."""
    out = factorvae.train(FACTOR[0], f"{tmp}/run", progress=False)
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)


@functools.cache
def references(kind: str) -> tuple:
    return tuple(single_run(c) for c in (FACTOR if kind == "factorvae" else BETA))


def train_batched(configs, mode, steps=STEPS):
    generators, rngs = streams(configs)
    model = BatchedVAE(configs, 1, generators, CPU, mode=mode)
    numbers = [model.train_step(stacked_batches(rngs)) for _ in range(steps)]
    return model, numbers


def tensors(state, prefix=""):
    """Every tensor of a nested state dict by path (weights, Adam moments and steps)."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    if isinstance(state, dict):
        return {p: t for k, v in state.items() for p, t in tensors(v, f"{prefix}/{k}").items()}
    return {}


def max_relative_difference(a, b) -> float:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    return max(float((ta[k] - tb[k]).abs().max() / tb[k].abs().max().clamp_min(1e-30)) for k in ta)


def assert_identical(a, b) -> None:
    """Same nested structure, same plain values, tensors equal bit for bit with the same strides."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b) and a.dtype == b.dtype and a.stride() == b.stride()
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_identical(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_identical(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("mode", ["loop", "grouped"])
@pytest.mark.parametrize("kind", ["factorvae", "betavae"])
def test_members_train_as_their_single_runs(kind, mode, tmp_path_factory):
    configs = FACTOR if kind == "factorvae" else BETA
    refs = list(references(kind))
    if kind == "factorvae":  # member 0's reference: the public training loop's checkpoint
        checkpoint = public_run(str(tmp_path_factory.getbasetemp()))
        assert_identical({"modules": checkpoint["modules"], "optimizers": checkpoint["optimizers"]},
                         refs[0][0][STEPS])
    steps = STEPS if mode == "loop" else GROUPED_STEPS
    model, numbers = train_batched(configs, mode, steps)
    for k, (states, first) in enumerate(refs):
        if mode == "loop":  # bit for bit, in the checkpoint's format, strides included
            assert_identical(model.member_state(k), states[steps])
        else:
            worst = max_relative_difference(model.member_state(k), states[steps])
            assert worst <= GROUPED_TOLERANCE, f"member {k}: {worst:.2e}"
        for name, value in first.items():
            torch.testing.assert_close(numbers[0][name][k], value, rtol=1e-5, atol=1e-6, msg=name)
    assert numbers[-1]["loss"].shape == (len(configs),) and numbers[-1]["kl_per_dim"].shape == (len(configs), 10)


def test_initial_global_rng_is_the_single_runs_and_is_restored(tmp_path_factory):
    checkpoint = public_run(str(tmp_path_factory.getbasetemp()))
    before = torch.get_rng_state()
    model = BatchedVAE(FACTOR, 1, streams(FACTOR)[0], CPU)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(model.init_rng_states[0], checkpoint["torch_global_rng"])  # no evaluation drew from it


@pytest.mark.parametrize("mode", ["loop", "grouped"])
def test_state_round_trip_is_bit_exact_and_resumes_exactly(mode):
    model, _ = train_batched(FACTOR, mode, steps=2)
    states = [model.member_state(k) for k in range(3)]
    generators = [torch.Generator().set_state(g.get_state()) for g in model.generators]
    rebuilt = BatchedVAE(FACTOR, 1, generators, CPU, states=states, mode=mode)  # the resume path
    for k in range(3):
        assert_identical(rebuilt.member_state(k), states[k])
    _, rngs = streams(FACTOR)
    pool = [stacked_batches(rngs)() for _ in range(2)]
    for m in (model, rebuilt):  # both go on identically: same weights, Adam moments and step counts
        feed = iter(pool)
        m.train_step(lambda: next(feed))  # noqa: B023
    for k in range(3):
        assert_identical(rebuilt.member_state(k), model.member_state(k))
    moved = model.member_state(1)
    rebuilt.load_member_state(0, **moved)  # one run's state into another slot, at the same step
    assert_identical(rebuilt.member_state(0), moved)


@pytest.mark.parametrize("mode", ["loop", "grouped"])
@pytest.mark.parametrize("change", ["perturbed", "nan"])
def test_no_gradient_leaks_between_members(mode, change):
    """Member 1's minibatches changed (or all NaN): members 0 and 2 end bit-identical."""
    edits = {"perturbed": lambda x: 1.0 - x, "nan": lambda x: torch.full_like(x, float("nan"))}

    def two_steps(edit):
        generators, rngs = streams(FACTOR)
        model = BatchedVAE(FACTOR, 1, generators, CPU, mode=mode)

        def change_member_1(x):
            x[1] = edit(x[1])
            return x

        return model, [model.train_step(stacked_batches(rngs, change_member_1)) for _ in range(2)]

    clean, _ = two_steps(lambda x: x)
    dirty, numbers = two_steps(edits[change])
    for k in (0, 2):
        assert_identical(dirty.member_state(k), clean.member_state(k))
    assert not torch.equal(dirty.stacked["encoder"]["fc.2.weight"][1], clean.stacked["encoder"]["fc.2.weight"][1])
    if change == "nan":
        assert numbers[-1]["loss"].isfinite().tolist() == [True, False, True]


@pytest.mark.parametrize("mode", ["loop", "grouped"])
def test_a_dropped_member_leaves_the_others_on_their_course(mode):
    generators, rngs = streams(FACTOR)
    model = BatchedVAE(FACTOR, 1, generators, CPU, mode=mode)
    poison = {"on": False}

    def change(x):
        if poison["on"]:
            x[1] = float("nan")
        return x

    for step in range(4):
        poison["on"] = step == 2
        numbers = model.train_step(stacked_batches(rngs, change))
        if step == 2:
            assert numbers["loss"].isfinite().tolist() == [True, False, True]
            model.drop(1)  # the caller stops member 1; members 0 and 2 become 0 and 1
            del rngs[1]
    kept = [FACTOR[0], FACTOR[2]]
    alone, _ = train_batched(kept, mode, steps=4)
    assert model.configs == kept and model.size == 2
    for k in range(2):
        if mode == "loop":
            assert_identical(model.member_state(k), alone.member_state(k))
        else:  # another K changes how grouped convolutions sum
            assert max_relative_difference(model.member_state(k), alone.member_state(k)) <= GROUPED_TOLERANCE


def test_members_that_differ_in_more_than_seed_and_weight_are_refused():
    generators = streams(FACTOR)[0]
    with pytest.raises(ValueError, match=r"^batched members may differ only in seed, gamma, beta; member 2 also "
                                         r"differs from member 0 in lr, same_batch$"):
        BatchedVAE([*FACTOR[:2], make_config(FACTOR[2], lr=3e-4, same_batch=True)], 1, generators, CPU)
    with pytest.raises(ValueError, match="not 'infowgan-gp'"):
        BatchedVAE([make_config(model="infowgan-gp")], 1, generators[:1], CPU)
    with pytest.raises(ValueError, match="3 member configs need as many generators"):
        BatchedVAE(FACTOR, 1, generators[:2], CPU)
    model = BatchedVAE(FACTOR[:1], 1, generators[:1], CPU)
    state = model.member_state(0)
    state["modules"]["encoder"]["extra"] = state["modules"]["encoder"]["fc.2.bias"]
    with pytest.raises(ValueError, match="^member 0's encoder state does not match the factorvae networks$"):
        model.load_member_state(0, **state)


def test_members_may_stand_at_different_steps():
    """Each member has its own Adam (and step count): a trained member loads into a fresh model exactly."""
    trained, _ = train_batched(FACTOR, "loop", steps=2)
    generators, _ = streams(FACTOR)
    model = BatchedVAE(FACTOR, 1, generators, CPU)
    model.load_member_state(1, **trained.member_state(1))
    assert_identical(model.member_state(1), trained.member_state(1))
    assert model.member_state(0)["optimizers"]["vae"]["state"] == {}  # member 0 has not stepped yet


def test_same_batch_variant_matches_its_single_run():
    configs = [make_config(c, same_batch=True) for c in FACTOR[:2]]
    model, numbers = train_batched(configs, "loop", steps=3)
    for k, config in enumerate(configs):
        states, first = single_run(config, steps=3)
        assert_identical(model.member_state(k), states[3])
        assert torch.equal(numbers[0]["d_loss"][k], first["d_loss"])
