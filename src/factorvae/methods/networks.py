"""What a training step sees of its networks (paper §3, Algorithm 2): the one interface the steps use.

Algorithm 2 (:func:`.factorvae.algorithm2`) and the β-VAE step (:func:`.vae.betavae_step`) are written once,
against the members below, and train either one run or K runs at once:
- :class:`Networks`: one run's encoder, decoder, discriminator and optimizers; tensors as the networks give
  them ((B, D) codes), losses scalars;
- :class:`~.batched.BatchedVAE`: K runs' stacked networks; every tensor has a leading member axis
  ((K, B, D) codes), losses are (K,), and each member draws its noise from its own generator.
Every loss is reduced within one member (``each`` applies a loss function member by member), and the step
sums the losses over members before ``backward``: d(sum)/d(loss_k) = 1 exactly, so each member's gradient is
its own, and for one run the sum of a scalar is the scalar.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..losses import permute_dims, reparameterize

# optimizer name -> the modules it steps (the VAE's Adam: encoder and decoder; D's Adam: the discriminator)
OPTIMIZED = {"vae": ("encoder", "decoder"), "discriminator": ("discriminator",)}


class Networks:
    """One run's networks and optimizers as a step uses them. Holds the method's own module and optimizer
    objects, so whatever changes them in place (a fast path, a resume) is what the step sees."""

    def __init__(self, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                 generator: torch.Generator) -> None:
        self.modules, self.optimizers, self.generator = modules, optimizers, generator

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) -> (mu, logvar), each (B, D)."""
        return self.modules["encoder"](x)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D) -> Bernoulli logits (B, C, H, W)."""
        return self.modules["decoder"](z)

    def discriminate(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D) -> D's two logits (B, 2)."""
        return self.modules["discriminator"](z)

    def sample(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z ~ q(z|x) by reparameterisation, the noise from the run's own generator."""
        return reparameterize(mu, logvar, self.generator)

    def permute(self, z: torch.Tensor) -> torch.Tensor:
        """permute_dims(z): samples of q̄(z), the permutations from the run's own generator."""
        return permute_dims(z, self.generator)

    @staticmethod
    def each(fn: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
        """A loss function of one member's tensors; one run is one member."""
        return fn(*args)

    def params(self, name: str) -> list[torch.Tensor]:
        """The parameters optimizer ``name`` steps: the inputs of its loss's backward."""
        return [p for module in OPTIMIZED[name] for p in self.modules[module].parameters()]

    def zero_grad(self, name: str) -> None:
        self.optimizers[name].zero_grad(set_to_none=True)

    def step(self, name: str) -> None:
        self.optimizers[name].step()
