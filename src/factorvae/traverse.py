"""Old import path of :mod:`factorvae.figures.traverse` (docs before the restructure named it); use that."""

from .figures.traverse import Traversal, latent_kl, prior_samples, reconstructions, traversal_grid, write_visuals

__all__ = ["Traversal", "latent_kl", "prior_samples", "reconstructions", "traversal_grid", "write_visuals"]
