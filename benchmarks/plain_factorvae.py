"""A plain, step-by-step FactorVAE (paper §3, Algorithm 2) written apart from the library, to check the
library's learning curves against ("a comparison with a plain re-implementation of Algorithm 2").

Everything here is the textbook code: ``nn.Sequential`` networks of appendix A in NCHW with stock layers,
``torch.optim.Adam`` (lr 1e-4, betas (0.9, 0.999) for the VAE; 1e-4, (0.5, 0.9) for D), batch 64, the VAE
step on minibatch B1, then the D step on z(B1).detach() against permute_dims(z(B2)) of a second minibatch,
with a second forward of D. Only the data (the built-in dSprites) and the metric (the paper metric,
``paper`` protocol) come from the library. Prints one JSON line per evaluation.

    .venv/bin/python benchmarks/plain_factorvae.py --steps 5000 --eval-every 2500 --seed 0 [--gamma 40]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from factorvae.data import load
from factorvae.metrics import factorvae_score


def encoder() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(),
        nn.Flatten(), nn.Linear(1024, 128), nn.ReLU(), nn.Linear(128, 20),
    )


def decoder() -> nn.Module:
    return nn.Sequential(
        nn.Linear(10, 128), nn.ReLU(), nn.Linear(128, 1024), nn.ReLU(), nn.Unflatten(1, (64, 4, 4)),
        nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1),
    )


def discriminator() -> nn.Module:
    layers: list[nn.Module] = []
    width = 10
    for _ in range(6):
        layers += [nn.Linear(width, 1000), nn.LeakyReLU(0.2)]
        width = 1000
    return nn.Sequential(*layers, nn.Linear(1000, 2))


def permute_dims(z: torch.Tensor) -> torch.Tensor:
    return torch.stack([z[torch.randperm(len(z)), j] for j in range(z.shape[1])], dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--eval-every", type=int, default=2500)
    parser.add_argument("--gamma", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data, rng = load("dsprites"), np.random.default_rng(args.seed)
    enc, dec, disc = encoder(), decoder(), discriminator()
    opt_vae = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-4, betas=(0.9, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-4, betas=(0.5, 0.9))
    ones, zeros = torch.ones(64, dtype=torch.long), torch.zeros(64, dtype=torch.long)
    start, window = time.time(), []
    for step in range(1, args.steps + 1):
        x = torch.from_numpy(data.sample_observations(64, rng))
        mu, logvar = enc(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = F.binary_cross_entropy_with_logits(dec(z), x, reduction="sum") / 64
        kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(1).mean()
        logits = disc(z)
        tc = (logits[:, 0] - logits[:, 1]).mean()
        opt_vae.zero_grad()
        (recon + kl + args.gamma * tc).backward()
        opt_vae.step()  # D's gradients from this backward are cleared before its own step
        x2 = torch.from_numpy(data.sample_observations(64, rng))
        with torch.no_grad():
            mu2, logvar2 = enc(x2).chunk(2, dim=1)
            z_perm = permute_dims(mu2 + torch.randn_like(mu2) * torch.exp(0.5 * logvar2))
        d_loss = 0.5 * (F.cross_entropy(disc(z.detach()), zeros) + F.cross_entropy(disc(z_perm), ones))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        window.append([recon.item(), kl.item(), tc.item(), d_loss.item()])
        if step % args.eval_every == 0:
            def represent(obs: np.ndarray) -> np.ndarray:
                with torch.no_grad():
                    return enc(torch.from_numpy(obs)).chunk(2, dim=1)[0].numpy()

            score = factorvae_score(data, represent, seed=0, protocol="paper")["score"]
            recon_m, kl_m, tc_m, d_m = np.mean(window[-100:], axis=0)
            print(json.dumps({"step": step, "factorvae": score, "recon": recon_m, "kl": kl_m, "tc": tc_m,
                              "d_loss": d_m, "seconds": round(time.time() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
