"""Command-line interface: a thin layer that parses into the same Config and functions as the Python API.

Every user error (bad setting, missing file, unusable run directory) ends in one line on stderr,
``factorvae: error: ...``, and exit status 2, with no traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from .config import MODELS, ConfigError, make_config, parse_set
from .data import DataError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (the brief's rule for bad input)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# Options that `train`, `sweep` and `reproduce` share: each sets the Config field of the same name (for every
# run of a sweep), exactly as `--set field=value` would; giving both is refused.
RUN_FLAGS = ("dataset", "data_path", "batch_size", "device", "tensorboard")


def _add_run_options(p) -> None:
    p.add_argument("--dataset", help="data set name (default dsprites; see `factorvae data list`)")
    p.add_argument("--data-path", help="read the real data set from this file or folder instead of the built-in one")
    p.add_argument("--batch-size", type=int, help="minibatch size (default 64)")
    p.add_argument("--device", help="auto, cpu or cuda (default auto)")
    p.add_argument("--tensorboard", action="store_const", const=True,
                   help="also write TensorBoard curves and traversals under RUN_DIR/tensorboard/ "
                   "(needs the tensorboard extra: pip install 'factorvae[tensorboard]')")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (defaults: the paper's full settings)")
    p.add_argument("--model", help=f"method: {', '.join(MODELS)} (default factorvae)")
    _add_run_options(p)
    p.add_argument("--beta", type=float, help="β of β-VAE (default 4)")
    p.add_argument("--gamma", type=float, help="γ of FactorVAE (default 40)")
    p.add_argument("--steps", type=int, help="total training iterations (default 300000)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--eval-every", type=int, help="evaluate the metrics every N steps (default 0: off)")
    p.add_argument("--out", help="run directory to create (default runs/<model>-<dataset>-s<seed>-<time>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR (optionally to a new --steps)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other setting")
    p.add_argument("--quiet", action="store_true", help="no progress output")


_TRAIN_FLAGS = ("model", "beta", "gamma", "steps", "seed", "eval_every", *RUN_FLAGS)


def _train_overrides(args, flags: tuple[str, ...] = _TRAIN_FLAGS) -> dict:
    """The flags given, merged with ``--set``; a setting given both ways is refused."""
    overrides = {k: getattr(args, k) for k in flags if getattr(args, k) is not None}
    sets = parse_set(args.set)
    twice = sorted(set(overrides) & set(sets))
    if twice:  # which one should win is a guess: refuse it
        k = twice[0]
        raise ConfigError(f"{k} is given twice, as --{k.replace('_', '-')} {overrides[k]} and --set {k}={sets[k]}; "
                          "give it once")
    return {**overrides, **sets}


def cmd_train(args) -> int:
    from .run.rundir import RESUME_SETTINGS
    from .training.loop import fit, prepare_run

    overrides = _train_overrides(args)
    if args.resume:
        extra = sorted(set(overrides) - set(RESUME_SETTINGS))
        if extra or args.out:
            given = ", ".join(extra + (["out"] if args.out else []))
            raise ConfigError(f"--resume reads every setting from {args.resume}/config.json; only --steps may "
                              f"change (and how it runs: {', '.join(RESUME_SETTINGS[1:])}), but {given} was given")
        run = prepare_run(None, args.resume, resume=True, settings=overrides)
    else:
        config = make_config(**overrides)
        out = args.out or f"runs/{config.model}-{config.dataset}-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        run = prepare_run(config, out)
    try:
        print(f"training {run.config.model} on {run.config.dataset} from step {run.step} to {run.config.steps} "
              f"into {run.out_dir}", file=sys.stderr)
        out = fit(run, progress=not args.quiet)
    finally:
        run.close()
    print(f"finished: {out}", file=sys.stderr)
    return 0


def _add_data_path(p) -> None:
    p.add_argument("--data-path", help="read the run's data set from here instead of the path it was trained on "
                   "(the data moved); same data set, same image shape")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a run with the disentanglement metrics; writes RUN_DIR/eval.json")
    p.add_argument("run_dir", help="a run directory made by `factorvae train`")
    p.add_argument("--metrics", default="factorvae,betavae,mig,dci,sap,tc",
                   help="comma-separated: factorvae, betavae, mig, dci, sap, tc (default all)")
    p.add_argument("--protocol", default="paper", choices=("paper", "dlib"),
                   help="sample sizes: the paper's (L=100, 800+800 votes) or disentanglement_lib's")
    p.add_argument("--seed", type=int, default=0, help="seed of the metrics' random draws (default 0)")
    p.add_argument("--exhaustive", action="store_true",
                   help="encode the whole data set once and draw every vote from those codes")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    _add_data_path(p)
    p.add_argument("--set", dest="metric_set", action="append", default=[], metavar="METRIC.KEY=VALUE",
                   help="override one metric setting, e.g. dci.forest_trees=10 or tc.num_data=2000 (repeatable)")


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_run, print_table
    from .run.rundir import resolve_device

    settings = _metric_settings(args.metric_set, "--set", args.protocol)
    device = str(resolve_device(args.device))
    results = evaluate_run(args.run_dir, args.metrics.split(","), args.protocol, args.seed, args.exhaustive, device,
                           settings=settings, data_path=args.data_path)
    print_table(results)
    print(f"wrote {Path(args.run_dir) / 'eval.json'}", file=sys.stderr)
    return 0


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="list, describe and preview the data sets")
    dsub = p.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    dsub.add_parser("list", help="the data sets, built-in or read from files")
    info = dsub.add_parser("info", help="size, shape and factors of a data set")
    info.add_argument("name")
    info.add_argument("--data-path", help="describe the real files at this path instead of the built-in data")
    prev = dsub.add_parser("preview", help="a PNG grid: each row sweeps one factor (random images if none)")
    prev.add_argument("name")
    prev.add_argument("--data-path", help="preview the real files at this path instead of the built-in data")
    prev.add_argument("--out", default=None, help="PNG to write (default NAME-preview.png)")
    prev.add_argument("--seed", type=int, default=0)
    prev.add_argument("--zoom", type=int, default=2, help="pixel zoom of the saved picture (default 2)")


def cmd_data(args) -> int:
    from .data import load
    from .data.preview import check_picture, dataset_info, list_datasets, preview_grid, save_png

    if args.data_command == "list":
        for d in list_datasets():
            tags = ("built-in" if d["builtin"] else "files only") + (", factors" if d["has_factors"] else "")
            print(f"{d['name']:<10} {tags:<20} {d['description']}")
    elif args.data_command == "info":
        for key, value in dataset_info(args.name, args.data_path).items():
            print(f"{key}: {value}")
    else:
        out = Path(args.out or f"{args.name}-preview.png")
        _check_out_file(out, "--out")
        check_picture(out, args.zoom)
        save_png(preview_grid(load(args.name, args.data_path), seed=args.seed), out, zoom=args.zoom)
        print(f"wrote {out}", file=sys.stderr)
    return 0


def _check_out_file(out: Path, flag: str) -> None:
    if out.is_dir():
        raise ConfigError(f"{flag} {out} is a folder; give the name of the file to write")
    if not out.parent.is_dir():
        raise ConfigError(f"{flag} {out}: folder {out.parent} does not exist")


def _add_visuals(sub) -> None:
    p = sub.add_parser("traverse", help="latent traversals (PNG + GIF), reconstructions, samples and curves")
    p.add_argument("run_dir", help="a run directory made by `factorvae train`")
    p.add_argument("--seeds", type=int, default=3, help="number of seed images to traverse (default 3)")
    p.add_argument("--steps", type=int, default=10, help="columns per traversal row (default 10)")
    p.add_argument("--limit", type=float, default=3.0, help="sweep from -LIMIT to LIMIT (default 3)")
    p.add_argument("--mode", choices=("prior", "posterior"), default="prior",
                   help="sweep around 0 (prior) or around the seed image's code (posterior)")
    p.add_argument("--seed", type=int, default=0, help="picks the seed images (default 0)")
    _add_data_path(p)
    r = sub.add_parser("report", help="one self-contained HTML report of a run (or of a sweep folder)")
    r.add_argument("path", help="a run directory, or a sweep folder made by `factorvae sweep`")
    _add_data_path(r)


def cmd_traverse(args) -> int:
    from .figures.traverse import write_visuals

    if args.seeds < 1 or args.steps < 2 or not (math.isfinite(args.limit) and args.limit > 0) or args.seed < 0:
        raise ConfigError("--seeds must be >= 1, --steps >= 2, --limit a finite number > 0 and --seed >= 0")
    paths = write_visuals(args.run_dir, seed=args.seed, n_seeds=args.seeds, n_steps=args.steps, limit=args.limit,
                          mode=args.mode, data_path=args.data_path)
    for path in paths:
        print(path)
    return 0


def cmd_report(args) -> int:
    path = Path(args.path)
    if (path / "sweep.json").is_file():
        from .experiments.report import write_sweep_report

        if args.data_path:
            raise ConfigError("--data-path applies to a run directory; a sweep report reads no data")
        out = write_sweep_report(path)
    else:
        from .figures.report import write_report
        from .run.rundir import RunError, is_run_dir

        if not is_run_dir(path):
            raise RunError(f"{path} is neither a run directory (config.json) nor a sweep folder (sweep.json)")
        out = write_report(path, data_path=args.data_path)
    print(out)
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a run's encoder and decoder to one .safetensors file to share")
    p.add_argument("run_dir", help="a run directory made by `factorvae train`")
    p.add_argument("out", help="the file to write, e.g. model.safetensors (factorvae.load reads it back)")


def cmd_export(args) -> int:
    from .run.export import ExportError, export_run

    try:
        out = export_run(args.run_dir, args.out)
    except ExportError as exc:
        raise ConfigError(str(exc)) from None
    print(f"{out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _add_sweep_options(p) -> None:
    """Options shared by `sweep` and `reproduce`: where runs go, how they run, how they are scored."""
    _add_run_options(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any setting for every run")
    p.add_argument("--backend", choices=("local", "batched", "ray"), default="local",
                   help="local: a subprocess per run; batched: a subprocess per group of runs trained as one "
                        "batched model; ray: tasks on a Ray instance or cluster")
    p.add_argument("--models-per-process", type=int, metavar="K",
                   help="runs trained as one batched model per process (batched: default the whole grid of a "
                        "model; ray: default 1)")
    p.add_argument("--workers", type=int, help="runs at once (default: cores // threads)")
    p.add_argument("--threads", type=int, help="torch threads per run (default: 1, or cores // --workers)")
    p.add_argument("--address", help="Ray cluster to join (e.g. auto or HOST:6379); default: start a local one")
    p.add_argument("--protocol", choices=("paper", "dlib"), default="paper", help="metric sample sizes")
    p.add_argument("--metrics", default="factorvae,tc", help="scored after training (default factorvae,tc; none)")
    p.add_argument("--eval-set", action="append", default=[], metavar="METRIC.KEY=VALUE",
                   help="smaller metric samples, e.g. factorvae.num_train=200 or tc.num_data=2000")
    p.add_argument("--retry-failed", action="store_true", help="run again the runs that failed before")


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="train and score one run per (β or γ, seed) into a sweep folder")
    p.add_argument("--model", required=True,
                   help="betavae (sweeps --beta), factorvae (sweeps --gamma), or both: betavae,factorvae")
    p.add_argument("--beta", help="comma-separated β values, e.g. 1,2,4,6,8,16")
    p.add_argument("--gamma", help="comma-separated γ values, e.g. 10,20,30,40,50,100")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per setting (default 1)")
    p.add_argument("--steps", type=int, help="training iterations per run (default 300000)")
    p.add_argument("--eval-every", type=int, default=0, help="score every N steps for the curves (default 0: off)")
    p.add_argument("--out", required=True, help="sweep folder (created; rerun the command to resume)")
    _add_sweep_options(p)
    r = sub.add_parser("reproduce", help="run one of the paper's experiments (see docs/sweeps.md)")
    from .experiments.presets import EXPERIMENTS

    r.add_argument("name", choices=sorted(EXPERIMENTS), help="the experiment")
    r.add_argument("--scale", type=float, default=1.0, help="shrink steps and seeds by this factor (default 1)")
    r.add_argument("--seeds", type=int, help="seeds per setting (default: round(10 × scale), at least 1)")
    r.add_argument("--eval-every", type=int, help="score every N steps (default: a tenth of the steps)")
    r.add_argument("--out", help="sweep folder (default runs/NAME-scaleF)")
    _add_sweep_options(r)


def _floats(text: str | None, flag: str) -> list[float] | None:
    try:
        return [float(v) for v in text.split(",") if v.strip()] if text else None
    except ValueError:
        raise ConfigError(f"--{flag} takes comma-separated numbers, got '{text}'") from None


def _metric_settings(items: list[str], flag: str, protocol: str) -> dict[str, dict]:
    """``["dci.forest_trees=10", ...]`` -> ``{"dci": {"forest_trees": 10}}``; values parsed as JSON if they can be."""
    import json

    from .evaluate import ALL_METRICS, check_eval_settings

    settings: dict[str, dict] = {}
    for key, value in parse_set(items).items():
        metric, _, name = key.partition(".")
        if not name:
            raise ConfigError(f"{flag} expects METRIC.KEY=VALUE, got '{key}={value}'")
        if metric not in ALL_METRICS:
            raise ConfigError(f"{flag} {key}: unknown metric '{metric}'; choose from: {', '.join(ALL_METRICS)}")
        try:
            settings.setdefault(metric, {})[name] = json.loads(value)
        except ValueError:
            settings.setdefault(metric, {})[name] = value
    check_eval_settings(protocol, settings)
    return settings


def _sweep_kwargs(args) -> dict:
    from .experiments.grid import EvalPlan

    eval_settings = _metric_settings(args.eval_set, "--eval-set", args.protocol)
    metrics = () if args.metrics.strip().lower() == "none" else tuple(m.strip() for m in args.metrics.split(","))
    plan = EvalPlan(metrics, args.protocol, eval_settings, args.eval_every or 0)
    return {"backend": args.backend, "workers": args.workers, "threads": args.threads, "address": args.address,
            "plan": plan, "retry_failed": args.retry_failed, "models_per_process": args.models_per_process}


def _sweep_done(summary: dict) -> int:
    print(f"sweep folder: {summary['out']}; report: factorvae report {summary['out']}", file=sys.stderr)
    if summary["failed"]:
        print(f"factorvae: {len(summary['failed'])} run(s) did not finish: {', '.join(summary['failed'])} "
              f"(errors in {summary['out']}/sweep.json)", file=sys.stderr)
        return 1
    return 0


def cmd_sweep(args) -> int:
    from .experiments.grid import PARAM, make_grid
    from .experiments.sweep import run_sweep

    values = {"beta": _floats(args.beta, "beta"), "gamma": _floats(args.gamma, "gamma")}
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    unused = [k for k, v in values.items() if v and k not in {PARAM.get(m) for m in models}]
    if unused:
        raise ConfigError(f"--{unused[0]} does not apply to --model {args.model} (betavae sweeps --beta, "
                          "factorvae --gamma)")
    settings = _train_overrides(args, RUN_FLAGS)
    specs = [s for m in models for s in make_grid(m, values.get(PARAM.get(m, "")), args.seeds, args.steps, settings)]
    specs.sort(key=lambda s: s.seed)  # seed-major across models too: an early stop keeps every setting
    return _sweep_done(run_sweep(specs, args.out, **_sweep_kwargs(args)))


def cmd_reproduce(args) -> int:
    from .experiments.presets import get, runs
    from .experiments.sweep import run_sweep

    scaled = get(args.name).scaled(args.scale, args.seeds)
    if args.eval_every is None:
        args.eval_every = scaled.eval_every
    print(scaled.describe(), file=sys.stderr)
    out = args.out or f"runs/{args.name}-scale{args.scale:g}"
    return _sweep_done(run_sweep(runs(scaled, _train_overrides(args, RUN_FLAGS)), out, **_sweep_kwargs(args)))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="factorvae", description="FactorVAE (Kim & Mnih, ICML 2018): train, evaluate and inspect runs."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(sub)
    _add_evaluate(sub)
    _add_data(sub)
    _add_visuals(sub)
    _add_sweep(sub)
    _add_export(sub)
    return parser


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "data": cmd_data, "traverse": cmd_traverse,
            "report": cmd_report,
            "sweep": cmd_sweep, "reproduce": cmd_reproduce, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    from .run.rundir import RunError, RunInterrupted

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, DataError, RunError, FileNotFoundError) as exc:
        print(f"factorvae: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # e.g. a read-only run directory: the file and the reason, on one line
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"factorvae: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USAGE
    except RunInterrupted as exc:
        print(f"factorvae: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("factorvae: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
