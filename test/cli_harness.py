"""Run many ``python -m MODULE ARGS`` commands in one interpreter, as ``python -m`` would.

    python test/cli_harness.py CASES.json  ->  prints a JSON list of {"rc", "stderr"}

Each case (``{"module": ..., "argv": [...]}``) runs with ``runpy.run_module(run_name="__main__")``
and its file descriptors 1 and 2 redirected, so output written by C libraries is captured too. An
exception that escapes is printed as Python prints it (a traceback) with exit status 1, exactly
what the command line would show. Imports are shared between cases, which keeps a table of
dozens of commands fast.
"""

from __future__ import annotations

import json
import logging
import os
import runpy
import sys
import tempfile
import traceback
import warnings


def run_case(module: str, argv: list[str]) -> dict[str, object]:
    """Run one command; return its exit status and everything it wrote to stdout and stderr."""
    temp = tempfile.TemporaryFile
    with temp("w+", encoding="utf-8", errors="replace") as out, temp("w+", errors="replace") as err:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        old_argv, old_streams = sys.argv, (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = out, err
        logging.getLogger().handlers.clear()  # basicConfig binds the stream of its first call
        sys.argv = [module, *argv]
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            rc = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                rc = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                rc = 1
        except BaseException:  # noqa: BLE001 - what the interpreter would print
            traceback.print_exc()
            rc = 1
        finally:
            out.flush()
            err.flush()
            sys.argv = old_argv
            sys.stdout, sys.stderr = old_streams
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
        out.seek(0)
        err.seek(0)
        return {"rc": rc, "stdout": out.read()[-20000:], "stderr": err.read()[-20000:]}


def main() -> None:
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    results = [run_case(case["module"], case["argv"]) for case in cases]
    sys.stdout.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
