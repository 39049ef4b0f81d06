"""Run the soul-bench CLI in-process, the way the console script does (exit codes included)."""

import sys

from soul_bench.cli import main


def run_cli(args, capsys):
    old = sys.argv
    sys.argv = ["soul-bench", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def records_by_cell(out) -> dict:
    """The records a run wrote into ``out``, by (kind, method): ("target", None), ("unlearned", "ga"), …"""
    import json
    from pathlib import Path

    records = (json.loads(p.read_text()) for p in (Path(out) / "records").glob("*.json"))
    return {(r["kind"], r["method"]): r for r in records}
