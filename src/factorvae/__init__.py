"""factorvae: Kim & Mnih, "Disentangling by Factorising" (ICML 2018), in PyTorch."""

__version__ = "0.1.0"
