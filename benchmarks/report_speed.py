"""Time the figures of paper §4 and the HTML report for one run directory.

    python benchmarks/report_speed.py RUN_DIR [--seeds 3] [--threads N]

Prints the seconds spent importing, loading the model (``factorvae.load``), drawing every figure
(:func:`factorvae.figures.traverse.write_visuals`) and writing the report
(:func:`factorvae.figures.report.write_report`,
which then reuses the figures just drawn). The target for a trained dSprites run is under 20 s in all on
a CPU. Writes ``RUN_DIR/figures/`` and ``RUN_DIR/report.html`` like the CLI does.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--seeds", type=int, default=3, help="seed images to traverse (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if not (args.run_dir / "checkpoint.pt").is_file():
        print(f"{args.run_dir} has no checkpoint.pt: nothing to draw traversals from", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    import torch

    import factorvae
    from factorvae.figures.report import write_report
    from factorvae.figures.traverse import write_visuals

    if args.threads:
        torch.set_num_threads(args.threads)
    if not hasattr(factorvae, "load"):
        print("factorvae.load does not exist yet: the model side is not merged; nothing to time", file=sys.stderr)
        return 2
    t1 = time.perf_counter()
    model = factorvae.load(args.run_dir)
    t2 = time.perf_counter()
    paths = write_visuals(args.run_dir, n_seeds=args.seeds, model=model)
    t3 = time.perf_counter()
    report = write_report(args.run_dir, model=model)
    t4 = time.perf_counter()

    size = sum(p.stat().st_size for p in paths)
    print(f"run          {args.run_dir} ({model.config.model} on {model.config.dataset}, step {model.step})"
          if hasattr(model, "step") else f"run          {args.run_dir}")
    print(f"torch threads {torch.get_num_threads()}")
    print(f"import       {t1 - t0:6.2f} s")
    print(f"load         {t2 - t1:6.2f} s")
    print(f"figures      {t3 - t2:6.2f} s  ({len(paths)} files, {size / 1e6:.2f} MB)")
    print(f"report       {t4 - t3:6.2f} s  ({report.stat().st_size / 1e6:.2f} MB)")
    print(f"total        {t4 - t0:6.2f} s  (target < 20 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
