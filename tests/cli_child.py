"""Run ``python -m kd_utils`` argument lists in a child process where some
packages cannot be imported: a usage error must be found before them."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(
    """
    import contextlib, importlib.abc, io, json, sys

    blocked = tuple(json.loads(sys.argv[2]))

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                raise ImportError(f"{name} cannot be imported here")

    sys.meta_path.insert(0, Block())
    from kd_utils.__main__ import entry

    out = {}
    for case_id, argv in json.loads(sys.argv[1]):
        err, std = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
            code = entry(argv)
        out[case_id] = {"code": code, "stderr": err.getvalue(), "stdout": std.getvalue()}
    out["_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
    print(json.dumps(out))
    """
)


def run_cli_cases(cases, blocked=("tensorflow", "keras"), env=None) -> dict:
    """``{case_id: {"code", "stderr", "stdout"}, "_modules": [...]}`` for ``cases``
    (``[(case_id, argv), ...]``) run by ``kd_utils.__main__.entry`` with ``blocked``
    packages unimportable; ``_modules`` lists any TensorFlow / Keras module loaded."""
    run = subprocess.run([sys.executable, "-c", CHILD, json.dumps(list(cases)), json.dumps(list(blocked))],
                         cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])
