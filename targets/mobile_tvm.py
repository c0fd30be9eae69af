"""The TVM aarch64 variant of the mobile target: the legalized graph compiled by TVM for
aarch64-linux-gnu (NEON), linked with the cross g++, bundled with the TVM runtime libraries of the
aarch64 wheels (libtvm_runtime.so + libtvm_ffi.so, ~5 MB; libtvm_runtime_extra.so for models that
call its sort/top-k) and a small C++ loader
(mobile_loader.cc, cross-compiled), so the device needs neither Python nor the TVM compiler:

    tvm-aarch64/loader tvm-aarch64/model.so --out DIR input0.npy [input1.npy ...]

Built only where the cross toolchain (Debian: g++-aarch64-linux-gnu) and the aarch64 wheels
(`make install` downloads them; or $EDGEATTN_AARCH64_WHEELS) are present; verified under
qemu-aarch64 (Debian: qemu-user) against ORT on the same graph. The bundle needs glibc ≥ 2.27
(ARM64 Linux boards, Jetson CPUs); Android's bionic needs a runtime built with the NDK instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx_ir as ir

CXX = "aarch64-linux-gnu-g++"
QEMU = "qemu-aarch64"
SYSROOT = "/usr/aarch64-linux-gnu"
SUBDIR = "tvm-aarch64"
LIBS = {"libtvm_runtime.so": ("apache_tvm-0.27.0.post1-", "tvm/lib/libtvm_runtime.so"),
        "libtvm_ffi.so": ("apache_tvm_ffi-0.1.14.post1-", "tvm_ffi/lib/libtvm_ffi.so")}
# The runtime's contrib kernels (sort/top-k, which ToMe's and cls-prune's TopK call): shipped only
# with a model that calls them (+1.2 MB); linked first, as it needs the others.
EXTRA_LIBS = {"libtvm_runtime_extra.so": ("apache_tvm-0.27.0.post1-", "tvm/lib/libtvm_runtime_extra.so")}
LOADER_SRC = Path(__file__).with_name("mobile_loader.cc")
# --device presets → LLVM CPU (tuned instruction selection; NEON everywhere). Android is not among
# them: its bionic libc needs a TVM runtime built with the NDK.
DEVICES = {"generic-arm64": (None, "any ARMv8-A core with NEON"),
           "rpi4": ("cortex-a72", "Raspberry Pi 4 (Cortex-A72)"),
           "rpi5": ("cortex-a76", "Raspberry Pi 5 (Cortex-A76, dot product)"),
           "jetson-orin": ("cortex-a78ae", "NVIDIA Jetson Orin CPU (Cortex-A78AE, dot product)")}
DEFAULT_DEVICE = "generic-arm64"


def check_device(name: str) -> str:
    if name not in DEVICES:
        raise ValueError(f"unknown mobile device '{name}' — use one of: {', '.join(DEVICES)}")
    return name


def device_target(name: str):
    import tvm

    mcpu, _ = DEVICES[check_device(name)]
    spec = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], **({"mcpu": mcpu} if mcpu else {})}
    return tvm.target.Target(spec)


def wheels_dir() -> Path:
    return Path(os.environ.get("EDGEATTN_AARCH64_WHEELS") or Path(sys.prefix) / "share" / "edgeattn" / "aarch64-wheels")


def _wheel(prefix: str) -> Path | None:
    return next(iter(sorted(wheels_dir().glob(f"{prefix}*aarch64*.whl"))), None)


def available() -> tuple[bool, str]:
    if shutil.which(CXX) is None:
        return False, f"{CXX} not found — apt-get install g++-aarch64-linux-gnu (make install does, as root)"
    missing = [p for p, _ in LIBS.values() if _wheel(p) is None]
    if missing:
        return False, f"aarch64 TVM wheels missing in {wheels_dir()} — run make install (pip download)"
    try:
        import tvm  # noqa: F401
    except ImportError:
        return False, "apache-tvm is not installed — pip install 'edgeattn[tvm]'"
    return True, "TVM cross-compiled for aarch64-linux-gnu"


def _include_dir() -> Path:
    import tvm_ffi

    return Path(tvm_ffi.__file__).parent / "include"


def build(model: ir.Model, workdir: Path, device: str = DEFAULT_DEVICE) -> dict:
    """Write SUBDIR/{model.so, loader, runtime libs}; returns the manifest's payload entries."""
    import tvm

    from edgeattn.targets import tvm as tvm_target

    target = device_target(device)

    m = ir.from_proto(ir.to_proto(model))
    tvm_target.legalize(m)
    out = Path(workdir) / SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    executable = tvm_target.compile_default(tvm_target.import_relax(m), target)
    executable.export_library(str(out / "model.so"), cc=CXX, options=["-s"])
    calls_contrib = b"tvm.contrib." in (out / "model.so").read_bytes()  # packed functions are called by name
    libs = {**(EXTRA_LIBS if calls_contrib else {}), **LIBS}
    for name, (prefix, member) in libs.items():
        with zipfile.ZipFile(_wheel(prefix)) as z, z.open(member) as src, open(out / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    # --no-as-needed: nothing in the runtime libraries is referenced directly; loading them registers
    # the VM and the contrib kernels.
    link = [f"-l{name[3:-3]}" for name in libs]
    subprocess.run([CXX, "-std=c++17", "-O2", "-s", "-isystem", str(_include_dir()), str(LOADER_SRC), "-o",
                    str(out / "loader"), f"-L{out}", f"-Wl,-rpath-link,{out}", "-Wl,--no-as-needed", *link,
                    "-Wl,--as-needed", "-Wl,-rpath,$ORIGIN"], check=True, capture_output=True)
    files = {f"{SUBDIR}/{p.name}": p.name for p in sorted(out.iterdir())}
    size = sum(p.stat().st_size for p in out.iterdir())
    return {"payload": {f"tvm_{name.replace('.', '_')}": rel for rel, name in files.items()},
            "info": {"bytes": size, "device": device, "device_description": DEVICES[device][1],
                     "target": str(target.attrs.get("mcpu") or "generic") + " aarch64-linux-gnu +neon",
                     "static_dims": tvm_target.static_dims(m),
                     "run": f"{SUBDIR}/loader {SUBDIR}/model.so --out DIR input.npy ..."}}


def example_feeds(model: ir.Model, seed: int = 0) -> dict[str, np.ndarray]:
    """Batch-1 inputs (the variant is compiled with symbolic dims fixed to 1)."""
    from edgeattn.targets import tvm as tvm_target

    dims = tvm_target.static_dims(model)
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in model.graph.inputs:
        shape = [d if isinstance(d, int) else dims.get(tvm_target._symbol(d), 1) for d in v.shape]
        dt = np.dtype(v.dtype.numpy())
        feeds[v.name] = (rng.standard_normal(shape).astype(dt) if dt.kind == "f" else np.ones(shape, dt))
    return feeds


def run_emulated(bundle: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run the bundle's loader under qemu-aarch64 (inputs in graph order); outputs as float32."""
    if shutil.which(QEMU) is None:
        raise RuntimeError(f"{QEMU} not found — apt-get install qemu-user")
    with tempfile.TemporaryDirectory(prefix="edgeattn-qemu-") as tmp:
        args = []
        for i, (name, x) in enumerate(feeds.items()):
            np.save(Path(tmp) / f"in{i}.npy", np.ascontiguousarray(x))
            args.append(str(Path(tmp) / f"in{i}.npy"))
        r = subprocess.run([QEMU, "-L", SYSROOT, str(bundle / "loader"), str((bundle / "model.so").resolve()),
                            "--threads", "1", "--out", tmp, *args], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"the aarch64 loader failed under qemu: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        count = len([p for p in Path(tmp).glob("output_*.npy")])
        return [np.load(Path(tmp) / f"output_{i}.npy") for i in range(count)]
