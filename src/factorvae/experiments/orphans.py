"""Sweep workers die with their driver, however the driver dies.

A local sweep's workers run in sessions of their own (so that a terminal's Ctrl-C reaches only the
driver, which forwards one stop to each), which also means nothing stops them when the driver is killed
with SIGKILL: they would train on, unseen, and a rerun of the sweep would start a second writer. So each
worker asks the kernel for SIGTERM when its parent ends (Linux ``prctl(PR_SET_PDEATHSIG)``), and where
that is unavailable, a daemon thread polls the parent's pid. SIGTERM makes a training worker write a
checkpoint and exit (training/loop.py), so the next run of the sweep resumes it exactly.

This module uses only the standard library, so it can be tested without importing torch.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
POLL_S = 1.0


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> str:
    """Arrange for ``sig`` when the parent process (``parent``, default the current one) ends; returns how.

    The parent may already be gone when this runs (the child was just started): then ``sig`` is sent now.
    """
    parent = os.getppid() if parent is None else parent
    how = "prctl" if _prctl_pdeathsig(sig) else "poll"
    if how == "poll":
        threading.Thread(target=_poll, args=(parent, sig), name="die-with-parent", daemon=True).start()
    if os.getppid() != parent:  # orphaned before the request took effect
        os.kill(os.getpid(), sig)
    return how


def _prctl_pdeathsig(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _poll(parent: int, sig: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os.kill(os.getpid(), sig)
