"""One booster's trees compiled to a native object file, in a process of its own.

`python -m serving.compile_worker MODEL_TXT OBJECT_FILE` reads a LightGBM model text, builds its
trees' code with lleaves (LLVM) and writes the object file (owner-only, created new), then
prints one JSON line `{"sha256": ..., "seconds": ...}` on stdout: the digest of the bytes it
wrote, which the parent checks before it loads them and records in the registry.

Why a process: compiling is seconds of CPU in LLVM; in a process of its own it neither holds the
serving worker's interpreter lock nor shares its memory, several boosters compile on several
cores at once, and a compile that crashes takes only itself down. The process exits when its
standard input closes (`exit_with_parent`), so it never outlives the process that started it,
however that one ends.

Compile options (`OPTIONS`): lleaves' defaults except `finline=False`. With inlining, every
tree is inlined into one huge function whose machine code generation dominates: the default
demo world's four boosters (175-423 trees of 31-63 leaves) took 53 s of CPU, against 13 s
without, for 100-row predictions within a few percent (benchmarks in the README, Online
predictions). This module imports only llvmlite and lleaves, so a process starts quickly.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from ctypes import CFUNCTYPE, POINTER, c_double, c_int32

ROOT = "forest_root"  # the entry function lleaves generates
OPTIONS = {"finline": False, "fblocksize": 34, "fcodemodel": "large", "use_fp64": True}
# the compile yields to request handling when both want the cores
NICENESS = 5
EXIT_ORPHANED = 3
# void forest_root(double *rows, double *out, int32 start, int32 end)
ENTRY_TYPE = CFUNCTYPE(None, POINTER(c_double), POINTER(c_double), c_int32, c_int32)


def llvm():
    """llvmlite's binding with the native target ready (cheap to repeat)."""
    from llvmlite import binding

    binding.initialize()
    binding.initialize_native_target()
    binding.initialize_native_asmprinter()
    return binding


def target_machine():
    """The host CPU, as lleaves targets it (its position-independent code, its code model)."""
    binding = llvm()
    target = binding.Target.from_triple(binding.get_process_triple())
    return target.create_target_machine(cpu=binding.get_host_cpu_name(), features=_features(),
                                        reloc="pic", codemodel=OPTIONS["fcodemodel"])


def _features() -> str:
    try:
        return llvm().get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM cannot tell on some hosts; lleaves then names none either
        return ""


def machine_identity() -> dict:
    """What an object file's code depends on besides the model: the CPU it was built for, the
    compiler versions and the options. Objects are kept and verified per identity."""
    from importlib.metadata import version

    binding = llvm()
    return {"triple": binding.get_process_triple(), "cpu": binding.get_host_cpu_name(),
            "features": _features(), "llvmlite": version("llvmlite"),
            "lleaves": version("lleaves"), "options": OPTIONS}


def compile_object(model_file: str) -> bytes:
    """The object code of the model text in `model_file` for this host."""
    from lleaves.compiler import compile_to_module

    binding = llvm()
    module = compile_to_module(model_file, fblocksize=OPTIONS["fblocksize"],
                               finline=OPTIONS["finline"], raw_score=False,
                               froot_func_name=ROOT, use_fp64=OPTIONS["use_fp64"])
    module.name = "forest"  # not the temporary file's name: the same model gives the same bytes
    engine = binding.create_mcjit_compiler(module, target_machine())
    written: list[bytes] = []
    engine.set_object_cache(notify_func=lambda _module, data: written.append(bytes(data)))
    engine.finalize_object()
    if not written:
        raise RuntimeError("LLVM produced no object code")
    return written[0]


def exit_with_parent() -> None:
    """Exit as soon as standard input reaches its end: the parent closed it (cancelled) or
    ended, whichever way. LLVM releases the interpreter lock, so the watcher runs meanwhile."""
    def watch() -> None:
        try:  # the raw descriptor: a buffered reader's lock would stall interpreter shutdown
            while os.read(0, 4096):
                pass
        finally:
            os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _yield_to_requests() -> None:
    os.nice(NICENESS)
    try:  # a server may pin itself to one core; its compile may use them all
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    except (AttributeError, OSError):
        pass


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m serving.compile_worker MODEL_TXT OBJECT_FILE", file=sys.stderr)
        return 2
    model_file, object_file = argv
    exit_with_parent()
    _yield_to_requests()
    started = time.perf_counter()
    data = compile_object(model_file)
    fd = os.open(object_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    print(json.dumps({"sha256": hashlib.sha256(data).hexdigest(),
                      "seconds": round(time.perf_counter() - started, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
