"""Stage functions compiled to C: CasADi code generation, the system's C compiler, a disk cache.

Private helper of :mod:`models.residual`. A circuit's stage function (:mod:`models.stage`) is
evaluated at every stage of every Newton iteration; in CasADi's SX virtual machine that was a
quarter of a cold hree_refinery solve. The same function generated as C (``CodeGenerator``) and
compiled with ``-O2`` runs two to three times faster and gives the same numbers bit for bit
(the generated code performs the virtual machine's operations in its order).

The C source is generated in every process (about 2 ms a function); the shared library is
looked up by the SHA-256 of that source, the compiler command and CasADi's version, in
``$SXTWIN_CODEGEN_DIR`` (default ``models/__pycache__/codegen``), and compiled there when it is
missing (about 0.15 s a function: the first run on a machine, reported apart by
``benchmarks/cascade.py``). Compilation writes to a temporary name and renames, so processes
that race on the same function both end with a whole library. Without a C compiler (``$CC``,
default ``cc``), with an unwritable cache or with ``SXTWIN_CODEGEN=0`` the virtual machine
serves, after one warning in the log.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

import casadi as ca

__all__ = ["cache_dir", "compiled"]

_log = logging.getLogger(__name__)
_FLAGS = ("-O2", "-shared", "-fPIC")
_warned: set[str] = set()


def cache_dir() -> Path:
    """Where the compiled stage functions are kept."""
    env = os.environ.get("SXTWIN_CODEGEN_DIR")
    return Path(env) if env else Path(__file__).resolve().parent / "__pycache__" / "codegen"


def _warn_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        _log.warning("stage functions run in CasADi's virtual machine: %s", reason)


def compiled(fn: ca.Function) -> ca.Function:
    """``fn`` compiled to C and loaded as a CasADi external function (``fn`` itself when that is
    switched off or not possible)."""
    if os.environ.get("SXTWIN_CODEGEN", "1") == "0":
        return fn
    gen = ca.CodeGenerator(f"{fn.name()}.c", {"with_header": False})
    gen.add(fn)
    source = gen.dump()
    compiler = shlex.split(os.environ.get("CC", "cc"))
    digest = hashlib.sha256("\0".join([source, *compiler, *_FLAGS, ca.CasadiMeta.version()]).encode()).hexdigest()
    path = cache_dir() / f"{fn.name()}_{digest[:20]}.so"
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
                c_file = Path(tmp) / f"{fn.name()}.c"
                c_file.write_text(source)
                so_file = Path(tmp) / path.name
                subprocess.run(
                    [*compiler, *_FLAGS, "-o", str(so_file), str(c_file)], check=True, capture_output=True, timeout=120
                )
                os.replace(so_file, path)
        except (OSError, subprocess.SubprocessError) as exc:
            _warn_once(f"could not compile {fn.name()} ({type(exc).__name__}: {exc})")
            return fn
    try:
        return ca.external(fn.name(), str(path))
    except RuntimeError as exc:
        _warn_once(f"could not load {path} ({exc})")
        return fn
