"""training/cuda_graph.py: one training step captured as a CUDA graph.

On CPU (every machine): capture is refused with a one-line reason naming what is missing, and the
parts a capture relies on are checked without a GPU: the warm-up makes one static buffer per
``next_batch()`` call of a step (two for FactorVAE's B1 and B2), a snapshot and restore around the
warm-up leaves a method bit-identical to an untouched twin (fresh or mid-training, single or batched),
a graphed step fills its buffers in call order, and, with torch.cuda's graph API stubbed, capture_step
registers every generator, sets ``capturable`` only while capturing and reports a failure in one line.
With CUDA (run on a GPU machine with ``PYTHONPATH=src python3 -m pytest tests/test_cuda_graph.py``): the
graphed step's numbers, weights, Adam state and noise generators after 3 replays equal the eager step's
from the same state. That test has not run yet: no GPU was available when it was written.
"""

import contextlib
import copy
import functools

import numpy as np
import pytest
import torch

from factorvae.config import make_config
from factorvae.data import load
from factorvae.methods import build_method
from factorvae.methods.batched import BatchedVAE
from factorvae.training import cuda_graph
from factorvae.training.cuda_graph import GraphedStep, capture_step, warm_up

CPU = torch.device("cpu")
BATCH = 8
SMALL = {"batch_size": BATCH, "d_hidden": 64}  # paper encoder and decoder, a narrower discriminator

pytestmark = pytest.mark.usefixtures("one_thread")


def method_on(device, model="factorvae", seed=0, **settings):
    config = make_config(model=model, seed=seed, **{**SMALL, **settings})
    torch.manual_seed(config.seed)
    return build_method(config, 1, torch.Generator(device).manual_seed(seed + 1), device)


def batched_on(device, k=2, mode=None):
    configs = [make_config(model="factorvae", seed=s, gamma=10.0 * (s + 1), **SMALL) for s in range(k)]
    generators = [torch.Generator(device).manual_seed(s + 1) for s in range(k)]
    return BatchedVAE(configs, 1, generators, device, mode=mode)


@functools.cache
def dsprites():
    return load("dsprites")


def batch_list(n, shape, device, seed=0):
    """n dSprites minibatches of ``shape`` ((B,) or (K, B)) + (1, 64, 64), float32 on ``device``."""
    data, rng = dsprites(), np.random.default_rng(seed)
    count = int(np.prod(shape))
    return [torch.from_numpy(data.sample_observations(count, rng)).view(*shape, 1, 64, 64).to(device)
            for _ in range(n)]


def feeder(batches):
    it = iter(batches)
    return lambda: next(it)


def state_of(method):
    if isinstance(method, BatchedVAE):
        return [method.member_state(k) for k in range(method.size)]
    return copy.deepcopy({"modules": {k: m.state_dict() for k, m in method.modules.items()},
                          "optimizers": {k: o.state_dict() for k, o in method.optimizers.items()}})


def generator_states(method):
    gens = method.generators if isinstance(method, BatchedVAE) else [method.generator]
    return [g.get_state() for g in gens]


def assert_close_states(a, b, rel=0.0):
    """Same structure and plain values; tensors equal (rel 0) or within max|a − b| <= rel·max|b|."""
    if isinstance(a, torch.Tensor):
        assert a.shape == b.shape and a.dtype == b.dtype
        if rel == 0.0:
            assert torch.equal(a, b)
        elif a.numel():
            diff = float((a.double() - b.double()).abs().max())
            assert diff <= rel * float(b.double().abs().max()), f"max |Δ| {diff:.3g}"
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_close_states(a[k], b[k], rel)
    elif isinstance(a, list | tuple):
        for x, y in zip(a, b, strict=True):
            assert_close_states(x, y, rel)
    else:
        assert a == b


# ---- CPU: refusals ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: method_on(CPU), lambda: method_on(CPU, "betavae"), lambda: batched_on(CPU)])
def test_capture_on_cpu_is_refused_naming_cuda_and_changes_nothing(make):
    method = make()
    before, gens = state_of(method), generator_states(method)
    example = batch_list(1, (2, BATCH) if isinstance(method, BatchedVAE) else (BATCH,), CPU)[0]
    graphed, reason = capture_step(method, example)
    assert graphed is None
    assert "CUDA" in reason and "\n" not in reason
    assert_close_states(state_of(method), before)
    assert all(torch.equal(a, b) for a, b in zip(generator_states(method), gens, strict=True))


def test_a_gan_method_is_refused_with_its_name():
    method = method_on(CPU, "infowgan-gp")
    graphed, reason = capture_step(method, batch_list(1, (BATCH,), CPU)[0])
    assert graphed is None and "InfoWGANGP" in reason


def test_a_non_fused_optimizer_is_refused():
    method = method_on(CPU)
    method.opt_d = method.optimizers["discriminator"] = torch.optim.Adam(method.discriminator.parameters(), lr=1e-4)
    graphed, reason = capture_step(method, batch_list(1, (BATCH,), CPU)[0])
    assert graphed is None and "not a fused Adam" in reason


# ---- CPU: the pieces a capture relies on -------------------------------------------------------------------

@pytest.mark.parametrize(("make", "calls"), [
    (lambda: method_on(CPU), 2),  # B1, then B2 after the VAE update (Algorithm 2)
    (lambda: method_on(CPU, same_batch=True), 1),
    (lambda: method_on(CPU, "betavae"), 1),
    (lambda: batched_on(CPU, mode="grouped"), 2),
])
def test_warm_up_makes_one_static_buffer_per_next_batch_call(make, calls):
    method = make()
    example = batch_list(1, (2, BATCH) if isinstance(method, BatchedVAE) else (BATCH,), CPU)[0]
    buffers = warm_up(method, example, steps=2)
    assert len(buffers) == calls
    assert all(b.shape == example.shape and torch.equal(b, example) for b in buffers)
    assert len({b.data_ptr() for b in buffers}) == calls  # each call its own buffer


def test_a_step_whose_batch_count_changes_cannot_be_warmed_up():
    calls = iter([1, 2])

    class Irregular:
        kind = "vae"

        def train_step(self, next_batch):
            return {"x": sum(next_batch() for _ in range(next(calls))).sum()}

    with pytest.raises(RuntimeError, match="next_batch"):
        warm_up(Irregular(), torch.zeros(2), steps=2)


@pytest.mark.parametrize("trained", [0, 2])
@pytest.mark.parametrize("kind", ["factorvae", "betavae", "batched"])
def test_warm_up_and_restore_leave_the_method_as_an_untouched_twin(kind, trained):
    """What capture_step does around a capture, on CPU: afterwards the method trains exactly as its twin."""
    make = (lambda: batched_on(CPU)) if kind == "batched" else (lambda: method_on(CPU, kind))
    method, twin = make(), make()
    shape = (2, BATCH) if kind == "batched" else (BATCH,)
    for x in batch_list(trained, shape, CPU, seed=1):  # Adam state that exists (resumed) or not yet (fresh)
        method.train_step(lambda x=x: x)
        twin.train_step(lambda x=x: x)
    parts = cuda_graph._Parts.of(method)
    saved = cuda_graph._snapshot(parts)
    warm_up(method, batch_list(1, shape, CPU, seed=2)[0], steps=3)
    cuda_graph._restore(parts, saved)
    batches = batch_list(4, shape, CPU, seed=3)
    for step in range(2):
        ours = method.train_step(feeder(batches[2 * step:]))
        theirs = twin.train_step(feeder(batches[2 * step:]))
        assert_close_states(ours, theirs)
    assert_close_states(state_of(method), state_of(twin))


def test_a_graphed_step_fills_its_buffers_in_call_order_then_replays():
    class Recorder:
        def __init__(self, inputs):
            self.inputs, self.seen = inputs, []

        def replay(self):
            self.seen.append([float(b[0]) for b in self.inputs])

    inputs = [torch.zeros(1), torch.zeros(1)]
    graph = Recorder(inputs)
    step = GraphedStep(graph, inputs, {"loss": torch.ones(())})
    numbers = step(feeder([torch.tensor([1.0]), torch.tensor([2.0])]))
    assert graph.seen == [[1.0, 2.0]] and set(numbers) == {"loss"}


class FakeGraph:
    """Stands in for torch.cuda.CUDAGraph on CPU: records what capture_step registers and sees."""

    instances: list = []

    def __init__(self):
        self.generators, self.flags_seen = [], None
        FakeGraph.instances.append(self)

    def register_generator_state(self, generator):
        self.generators.append(generator)


@pytest.fixture
def fake_cuda(monkeypatch):
    """capture_step's orchestration on CPU: the device check passes, and "capturing" runs the step eagerly
    inside a context that records the optimizers' capturable flags (or raises, when asked to)."""
    FakeGraph.instances.clear()
    settings = {"fail": False, "optimizers": []}

    @contextlib.contextmanager
    def graph(g):
        g.flags_seen = [grp["capturable"] for opt in settings["optimizers"] for grp in opt.param_groups]
        if settings["fail"]:
            raise RuntimeError("operation not permitted when stream is capturing\nsecond line")
        yield

    monkeypatch.setattr(cuda_graph, "unsupported", lambda method: None)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "set_stream", lambda stream: None)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    return settings


@pytest.mark.parametrize("kind", ["factorvae", "batched"])
def test_capture_orchestration_on_cpu_leaves_the_method_as_it_was(fake_cuda, kind):
    make = (lambda: batched_on(CPU, mode="grouped")) if kind == "batched" else (lambda: method_on(CPU))
    method, twin = make(), make()
    parts = cuda_graph._Parts.of(method)
    fake_cuda["optimizers"] = parts.optimizers
    shape = (2, BATCH) if kind == "batched" else (BATCH,)
    graphed, reason = capture_step(method, batch_list(1, shape, CPU)[0])
    assert graphed is not None and reason.startswith("captured") and len(graphed.inputs) == 2
    (graph,) = FakeGraph.instances
    assert graph.generators == parts.generators  # every noise generator registered
    assert graph.flags_seen and all(graph.flags_seen)  # capturable while capturing...
    assert not any(grp["capturable"] for opt in parts.optimizers for grp in opt.param_groups)  # ...not after
    assert set(graphed.outputs) >= {"loss", "tc", "d_loss"}
    batches = batch_list(2, shape, CPU, seed=4)
    assert_close_states(method.train_step(feeder(batches)), twin.train_step(feeder(batches)))
    assert_close_states(state_of(method), state_of(twin))


def test_a_failing_capture_gives_one_line_and_leaves_the_method_as_it_was(fake_cuda):
    method, twin = method_on(CPU), method_on(CPU)
    fake_cuda["fail"] = True
    graphed, reason = capture_step(method, batch_list(1, (BATCH,), CPU)[0])
    assert graphed is None
    assert reason == "capture failed: RuntimeError: operation not permitted when stream is capturing"
    assert all(p.grad is None for p in cuda_graph._Parts.of(method).params)
    batches = batch_list(2, (BATCH,), CPU, seed=4)  # the warm-up's Adam state is back to fresh: trains as the twin
    assert_close_states(method.train_step(feeder(batches)), twin.train_step(feeder(batches)))
    assert_close_states(state_of(method), state_of(twin))


def test_an_example_batch_on_another_device_is_refused(fake_cuda):
    graphed, reason = capture_step(method_on(CPU), torch.zeros(BATCH, 1, 64, 64, device="meta"))
    assert graphed is None and "example batch is on meta" in reason


# ---- CUDA: graphed against eager ---------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["factorvae", "betavae", "batched"])
def test_graphed_steps_equal_eager_steps_from_the_same_state(kind):
    """3 replays against 3 eager steps of a twin (same weights, generators and batches). cuDNN is made
    deterministic, so both run the same kernels on the same numbers: expected equal; the tolerance
    (relative to each tensor's largest value) only allows for a kernel whose sums are not reproducible."""
    cuda = torch.device("cuda")
    deterministic, torch.backends.cudnn.deterministic = torch.backends.cudnn.deterministic, True
    try:
        make = (lambda: batched_on(cuda, mode="grouped")) if kind == "batched" else (lambda: method_on(cuda, kind))
        method, twin = make(), make()
        shape = (2, BATCH) if kind == "batched" else (BATCH,)
        first = batch_list(2, shape, cuda, seed=8)  # one eager step each, so that both hold Adam state
        method.train_step(feeder(first))
        twin.train_step(feeder(first))
        graphed, reason = capture_step(method, batch_list(1, shape, cuda, seed=9)[0])
        assert graphed is not None, reason
        assert_close_states(state_of(method), state_of(twin), rel=1e-6)  # the capture left the method as it was
        batches = batch_list(6, shape, cuda)
        calls = len(graphed.inputs)
        for step in range(3):
            ours = {k: v.clone() for k, v in graphed(feeder(batches[calls * step:])).items()}
            theirs = twin.train_step(feeder(batches[calls * step:]))
            assert_close_states(ours, theirs, rel=1e-5)
        torch.cuda.synchronize()
        assert_close_states(state_of(method), state_of(twin), rel=1e-5)
        assert all(torch.equal(a, b) for a, b in zip(generator_states(method), generator_states(twin), strict=True))
    finally:
        torch.backends.cudnn.deterministic = deterministic


def test_the_cuda_graph_setting_falls_back_to_eager_steps_off_cuda(tmp_path, capsys):
    """``--set cuda_graph=true`` on CPU: the reason on stderr, and exactly the run an eager loop trains."""
    from factorvae import make_config, train
    from factorvae.run.checkpoint import load_checkpoint

    small = {"batch_size": 8, "d_hidden": 64, "log_every": 2, "steps": 4, "device": "cpu"}
    graphed = train(make_config(**small, cuda_graph=True), tmp_path / "g", progress=False)
    assert "cuda_graph: not CUDA: graph capture needs a CUDA device" in capsys.readouterr().err
    eager = train(make_config(**small), tmp_path / "e", progress=False)
    a, b = load_checkpoint(graphed / "checkpoint.pt"), load_checkpoint(eager / "checkpoint.pt")
    for name, module in a["modules"].items():
        for key, value in module.items():
            assert torch.equal(value, b["modules"][name][key]), (name, key)
