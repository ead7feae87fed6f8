"""``python -m bench [--quick | --smoke] [--only baselines|warren] [--out DIR]``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bench.config import FULL, MODES
from bench.report import RESULTS_DIR, console, write
from bench.runner import Runner


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick",
                      help="small counts, one repeat (a smoke run, < 90 s)")  # fmt: skip
    mode.add_argument("--smoke", action="store_const", dest="mode", const="smoke",
                      help="tiny counts: only checks that the harness works")  # fmt: skip
    parser.add_argument("--only", choices=("baselines", "warren"), action="append",
                        help="run only one side (may be repeated)")  # fmt: skip
    parser.add_argument("--measure", action="append", metavar="KEY",
                        help="only this measurement, e.g. warren_consume (repeatable)")  # fmt: skip
    parser.add_argument("--repeats", type=int, help="override the number of repeats")
    parser.add_argument("--flat-count", type=int, help="messages in the flat-memory batch")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    parser.add_argument("--no-progress", action="store_true", help="plain log lines")
    parser.set_defaults(mode=FULL.mode)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = MODES[args.mode]
    if args.repeats:
        cfg = cfg.scaled(repeats=args.repeats)
    if args.flat_count:
        cfg = cfg.scaled(flat_count=args.flat_count)
    only = set(args.only) if args.only else None

    if args.no_progress or not sys.stderr.isatty():
        runner = Runner(
            cfg, only=only, keys=args.measure, progress=lambda msg: print(f"· {msg}", flush=True)
        )
        result = runner.run()
    else:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("[bold]bench[/]"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
        ) as bar:
            task = bar.add_task("", total=None)
            runner = Runner(
                cfg,
                only=only,
                keys=args.measure,
                progress=lambda msg: bar.update(task, description=msg),
            )
            bar.update(task, total=runner.steps())
            result = runner.run(on_step=lambda: bar.advance(task))
    doc = write(result, out_dir=args.out)
    console(result, doc["checks"])
    print(f"wrote {args.out / 'latest.md'}, latest.json, throughput.png "
          f"({doc['meta']['duration_s']} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
