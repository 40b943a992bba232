"""Build a wheelhouse: everything heartjobs needs at run time, for a machine that reaches no package index.

    python scripts/wheelhouse.py --out dist/wheelhouse [--python-version 3.12] [--with-torch] [--lean]
                                 [--leave-out NAME,...] [--fid-weights FILE]

Writes, for one target Python on manylinux x86_64: a wheel of heartjobs itself; a wheel of every runtime
dependency, at the version installed in the Python running this script (the set the test suite passed
with), found by walking each wheel's own Requires-Dist for the target's Python and platform; pyradiomics,
which has no wheels on the index, built here (when the target is this Python's version) or as its source
with the build tools to compile it on the target; the OpenJPEG runtime library as Debian's package
(libopenjp2-7, for machines without it); optionally the pytorch-fid Inception weights (only the standard
file, checked by its sha256); manifest.json (each file's sha256 and size, what was left out and why, the
total) and SHA256SUMS. torch and torchvision are left out unless --with-torch (sites have their own CUDA
build; with it, the pinned pair and their CUDA libraries, gigabytes). --lean leaves FRD's stack out
(frd-score, pyradiomics, SimpleITK, OpenCV, PyWavelets, ...): FID and KID work, FRD can't run there.
--leave-out names more packages the target already has (its PyTorch image's numpy, say); at install
time pip finds them there, at versions heartjobs accepts, or stops naming the one it lacks. Built in a
folder beside --out, then put in its place (an existing --out must be a wheelhouse: it is replaced).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# manylinux tags a current x86_64 Linux (glibc >= 2.28) installs, newest first
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]
TORCH = {"torch", "torchvision"}
# FRD's feature extraction and what only it needs: out with --lean
FRD_STACK = {"frd-score", "pyradiomics", "simpleitk", "opencv-contrib-python-headless", "pywavelets", "pykwalify"}
# what compiling a source release on the target needs (pyradiomics' build imports numpy)
BUILD_TOOLS = ["setuptools", "wheel", "numpy"]
OPENJPEG_PACKAGE = "libopenjp2-7"


class WheelhouseError(Exception):
    """One line for the user; exit 2."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def target_environment(python_version: str) -> dict[str, str]:
    """PEP 508 marker values of the target: CPython `python_version` on x86_64 Linux."""
    return {
        "python_version": python_version,
        "python_full_version": f"{python_version}.0",
        "implementation_name": "cpython",
        "implementation_version": f"{python_version}.0",
        "platform_python_implementation": "CPython",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "sys_platform": "linux",
        "os_name": "posix",
        "extra": "",
    }


def applies(requirement: Requirement, environment: dict[str, str]) -> bool:
    return requirement.marker is None or requirement.marker.evaluate(environment)


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def pinned(requirement: Requirement) -> str:
    """name==version as installed here when that version satisfies the requirement (the tested set);
    else the requirement itself (pip picks the newest that fits the target)."""
    version = installed_version(requirement.name)
    if version is not None and requirement.specifier.contains(version, prereleases=True):
        return f"{requirement.name}=={version}"
    return f"{requirement.name}{requirement.specifier}"


def wheel_requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        message = Parser().parsestr(archive.read(metadata).decode())
    return [Requirement(line) for line in message.get_all("Requires-Dist") or []]


def wheel_name(wheel: Path) -> str:
    return canonicalize_name(wheel.name.split("-")[0])


def pip(*args: str, cwd: Path | None = None) -> None:
    command = [sys.executable, "-m", "pip", *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise WheelhouseError(f"pip {' '.join(args[:1])} failed: {last}")


def download_binaries(specs: list[str], out: Path, python_version: str) -> None:
    platform_args = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    pip(
        "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", python_version,
        "--implementation", "cp", *platform_args, "--dest", str(out), *specs,
    )  # fmt: skip


def project_requirements() -> list[Requirement]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [Requirement(r) for r in pyproject["project"]["dependencies"]]


def collect_wheels(out: Path, python_version: str, left_out: dict[str, str], sources: Path) -> dict[str, str]:
    """Every runtime dependency into `out`, down the Requires-Dist graph with the extras each requirement
    asks for (torch's cuda-toolkit[cublas, ...]), skipping left_out's names (and what only they pull in).
    Each at the version installed here where the target has a wheel of it, else the newest wheel the
    requirement allows. A package with no wheel for the target at all (pyradiomics, docopt) is built here:
    a pure-Python wheel serves any target, a compiled one only this Python's version, so for another version
    its source release goes in instead, with the build tools, to be compiled on the target. Returns how
    each package that is not the tested version's wheel was shipped."""
    environment = target_environment(python_version)
    shipped: dict[str, str] = {}
    requires: dict[str, list[Requirement]] = {}  # each fetched package's own requirements
    expanded: dict[str, set[str]] = {}  # and the extras already followed
    # setuptools too: a Python 3.11 venv starts with its own old one, which then hides the target's newer
    # one that torch requires (setuptools>=77), so pip must be able to upgrade it from here
    wanted = [r for r in [*project_requirements(), Requirement("setuptools")] if applies(r, environment)]
    while wanted:
        requirement = wanted.pop(0)  # its marker was evaluated when it was added, with the extra that asked
        name = canonicalize_name(requirement.name)
        if name in left_out:
            continue
        if name not in requires:
            requires[name] = fetch(requirement, out, python_version, sources, shipped)
            expanded[name] = set()
        extras = ({""} | set(requirement.extras)) - expanded[name]
        expanded[name] |= extras
        for dependency in requires[name]:
            marker = dependency.marker
            if marker is None or any(marker.evaluate(environment | {"extra": e}) for e in extras):
                wanted.append(dependency)
    return shipped


def fetch(requirement: Requirement, out: Path, python_version: str, sources: Path, shipped: dict) -> list:
    """One package into `out` (see collect_wheels); returns its requirements."""
    name = canonicalize_name(requirement.name)
    before = set(out.iterdir())
    tested = pinned(requirement)
    try:
        download_binaries([tested], out, python_version)
    except WheelhouseError as exc:
        if "No matching distribution" not in str(exc):
            raise
        try:  # no wheel of the tested version for the target: the newest wheel the requirement allows
            download_binaries([str(requirement.name) + str(requirement.specifier)], out, python_version)
        except WheelhouseError as again:
            if "No matching distribution" not in str(again):
                raise
            shipped[name] = build_here(tested, out, python_version, sources)
    new = sorted(set(out.iterdir()) - before)
    own = [f for f in new if f.name.endswith(".whl") and wheel_name(f) == name]
    if own and name not in shipped and "==" in tested and f"-{tested.partition('==')[2]}-" not in own[0].name:
        shipped[name] = f"{own[0].name}: not the version tested here ({tested}), which has no wheel for the target"
    if own:
        return wheel_requirements(own[0])
    return [Requirement(r) for r in importlib.metadata.requires(requirement.name) or []]  # a source release


def build_here(spec: str, out: Path, python_version: str, sources: Path) -> str:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    wheels = sources / "wheels"
    pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", spec, "--wheel-dir", str(wheels))
    (wheel,) = wheels.iterdir()
    pure = wheel.name.endswith("-none-any.whl")
    if pure or here == python_version:
        shutil.move(wheel, out / wheel.name)
        return "pure-Python wheel built here" if pure else f"wheel built here for Python {here}"
    wheel.unlink()
    pip("download", "--quiet", "--no-deps", "--no-build-isolation", "--no-binary=:all:", spec, "--dest", str(out))
    tools = [f"{n}=={installed_version(n)}" if installed_version(n) else n for n in BUILD_TOOLS]
    download_binaries(tools, out, python_version)
    return f"source release (Python {here} here, not {python_version}): compiled on the target by the offline install"


def build_heartjobs(out: Path) -> None:
    pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(ROOT))


def download_openjpeg(out: Path) -> None:
    def download() -> subprocess.CompletedProcess:
        return subprocess.run(["apt-get", "download", OPENJPEG_PACKAGE], cwd=out, capture_output=True, text=True)

    if shutil.which("apt-get") is None:
        raise WheelhouseError(f"no apt-get here to download {OPENJPEG_PACKAGE}: build the wheelhouse on Debian/Ubuntu")
    result = download()
    if result.returncode != 0 and os.geteuid() == 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update", "-q"], capture_output=True)
        result = download()
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise WheelhouseError(f"apt-get download {OPENJPEG_PACKAGE} failed: {last} (apt-get update may help)")


def check_weights(weights: Path) -> None:
    from heartjobs.evaluation.weights import STANDARD_FILENAME, STANDARD_SHA256

    if not weights.is_file():
        raise WheelhouseError(f"--fid-weights {weights}: no such file")
    digest = sha256_of(weights)
    if digest != STANDARD_SHA256:
        raise WheelhouseError(
            f"--fid-weights {weights}: sha256 {digest[:16]}... is not the standard {STANDARD_FILENAME} "
            f"({STANDARD_SHA256[:16]}...)"
        )


def add_weights(out: Path, weights: Path) -> None:
    from heartjobs.evaluation.weights import STANDARD_FILENAME

    (out / "weights").mkdir()
    shutil.copyfile(weights, out / "weights" / STANDARD_FILENAME)
    check_weights(out / "weights" / STANDARD_FILENAME)  # the copy too


def is_wheelhouse(folder: Path) -> bool:
    try:
        return json.loads((folder / "manifest.json").read_text()).get("kind") == "heartjobs-wheelhouse"
    except (OSError, ValueError, AttributeError):
        return False


def write_manifest(out: Path, record: dict) -> dict:
    files = sorted(p for p in out.rglob("*") if p.is_file())
    entries = [{"file": str(p.relative_to(out)), "sha256": sha256_of(p), "bytes": p.stat().st_size} for p in files]
    record |= {"files": entries, "total_bytes": sum(e["bytes"] for e in entries)}
    (out / "manifest.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / "SHA256SUMS").write_text("".join(f"{e['sha256']}  {e['file']}\n" for e in entries))
    return record


def build(out: Path, python_version: str, with_torch: bool, lean: bool, leave_out: list[str], weights: Path | None):
    left_out: dict[str, str] = {}
    if not with_torch:
        left_out |= dict.fromkeys(TORCH, "the target's own PyTorch is used (build with --with-torch to include it)")
    if lean:
        left_out |= dict.fromkeys(FRD_STACK, "--lean: FRD's feature extraction; FID and KID work, FRD does not")
    left_out |= dict.fromkeys((canonicalize_name(n) for n in leave_out), "--leave-out: the target has it")
    if weights is not None:
        check_weights(weights)  # before minutes of downloads
    if out.exists() and not is_wheelhouse(out):
        raise WheelhouseError(f"--out {out}: exists and is not a wheelhouse; give a new folder or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files = work / "wheelhouse"
        files.mkdir()
        built = collect_wheels(files, python_version, left_out, work / "sources")
        build_heartjobs(files)
        download_openjpeg(files)
        if weights is not None:
            add_weights(files, weights)
        record = {
            "kind": "heartjobs-wheelhouse",
            "heartjobs_version": installed_version("heartjobs"),
            "python_version": python_version,
            "platforms": PLATFORMS,
            "with_torch": with_torch,
            "lean": lean,
            "left_out": left_out,
            "shipped_otherwise": built,
            # what the offline install asks pip for besides heartjobs (its own requirements, less the ones
            # --lean leaves out): met by the wheelhouse, or by the target's own packages (its torch)
            "install": [
                str(r) for r in project_requirements() if not (lean and canonicalize_name(r.name) in FRD_STACK)
            ],
            "fid_weights": weights is not None,
        }
        record = write_manifest(files, record)
        if out.exists():
            old = work / "replaced"
            out.rename(old)
        files.rename(out)
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "wheelhouse")
    parser.add_argument("--python-version", default=here, help=f"the target's Python, e.g. 3.12 (default {here})")
    parser.add_argument("--with-torch", action="store_true", help="include the pinned torch and torchvision")
    parser.add_argument("--lean", action="store_true", help="leave FRD's dependencies out")
    parser.add_argument("--leave-out", default="", help="comma-separated packages the target already has")
    parser.add_argument("--fid-weights", type=Path, help="the standard pt_inception-2015-12-05-6726825d.pth")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"3\.\d{1,2}", args.python_version):
        print(f"error: --python-version {args.python_version!r}: give major.minor, e.g. 3.12", file=sys.stderr)
        return 2
    leave_out = [n.strip() for n in args.leave_out.split(",") if n.strip()]
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    try:
        record = build(args.out, args.python_version, args.with_torch, args.lean, leave_out, args.fid_weights)
    except (WheelhouseError, OSError) as exc:
        print(f"error: wheelhouse: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    count = len(record["files"])
    size = record["total_bytes"] / 2**20
    print(f"wheelhouse: {args.out}: {count} files, {size:.1f} MiB, for CPython {args.python_version} manylinux x86_64")
    for name, why in sorted(record["left_out"].items()):
        print(f"  left out {name}: {why}")
    for name, how in sorted(record["shipped_otherwise"].items()):
        print(f"  {name}: {how}")
    print(f"install it on the target: scripts/install.sh --offline {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
