"""Training methods, one per file (paper §2–4): each owns its networks, optimizers and ``train_step``.

A method exposes ``modules`` and ``optimizers`` (name -> object, saved in checkpoints), ``kind``
("vae" or "gan") and ``train_step(next_batch) -> dict of detached tensors``, where ``next_batch()``
returns a fresh minibatch (B, C, H, W) float32 in [0, 1] on the training device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..config import Config
from ..kernels import InferenceEncoder, for_device
from ..nets import Encoder, glorot_init
from .factorvae import FactorVAE
from .infowgan_gp import InfoWGANGP
from .vae import BetaVAE

METHODS = {"vae": BetaVAE, "betavae": BetaVAE, "factorvae": FactorVAE, "infowgan-gp": InfoWGANGP}


def build_method(config: Config, channels: int, generator: torch.Generator, device: torch.device):
    """The method object named by ``config.model``, its networks initialised as ``config.init`` says, then
    made fast on ``device`` in ``config.precision`` by :func:`~factorvae.kernels.for_device`, the one place
    that chooses fast paths (the method's own code is the paper's, in stock PyTorch)."""
    method = METHODS[config.model](config, channels, generator, device)
    if config.init == "glorot":
        for module in method.modules.values():
            glorot_init(module)
    return for_device(method, device, config.precision)


def inference_encode(method) -> Callable[[torch.Tensor], tuple]:
    """``method.encode`` for evaluation: a VAE's encoder runs as :class:`InferenceEncoder` (about 2.5× the
    module's speed on CPU), built now so that it holds the current weights; a GAN's Q head runs as is."""
    encoder = getattr(method, "encoder", None)
    return InferenceEncoder(encoder) if isinstance(encoder, Encoder) else method.encode
