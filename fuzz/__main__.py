"""Run one fuzz target under atheris: ``python -m fuzz rpc|credentials [CORPUS_DIR ...] [-flag=value ...]``.

The arguments after the target go to libFuzzer (``-max_total_time=60``, ``-runs=N``, a crash
file to reproduce it, ...). A crash exits non-zero and leaves ``crash-<sha1>`` in the working
directory (or under ``-artifact_prefix=``).
"""

from __future__ import annotations

import importlib
import sys

import atheris

TARGETS = {"rpc": "check_rpc", "credentials": "check_credential"}


def main() -> None:
    """Instrument the service and the target as they are imported, build the world, then fuzz."""
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m fuzz {{{'|'.join(TARGETS)}}} [CORPUS_DIR ...] [libFuzzer flags]")
    target = sys.argv.pop(1)
    # Only our code is instrumented: coverage of grpc, protobuf or SQLAlchemy internals would cost
    # a long start and steer the fuzzer at them rather than at the service.
    with atheris.instrument_imports(include=["identity", "fuzz"]):
        module = importlib.import_module(f"fuzz.{target}")
        common = importlib.import_module("fuzz.common")
    common.world()  # set up before fuzzing: its calls count as neither coverage nor time
    # libFuzzer runs argv[0] through the shell for -merge, -fork and -jobs: make it this command.
    argv = [f"{sys.executable} -m fuzz {target}", *sys.argv[1:]]
    atheris.Setup(argv, getattr(module, TARGETS[target]))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
