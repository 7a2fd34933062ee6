"""A run directory at rest: its errors and status, its lock, checkpoint, loading and export.

``rundir`` (errors, status.json, device, settings checks), ``lock`` (one writer per folder),
``checkpoint`` (save / load the resumable state), ``trained`` (a run directory or export -> a model),
``export`` (weights as safetensors). Everything here sits below evaluation, figures and training.
"""
