"""The container, checked without a Docker engine: compose.yaml, the Dockerfile, and the paths jobs name."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import tomli
import yaml

from heartjobs.cli import build_parser
from heartjobs.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
JOB_FILES = sorted(p for p in ROOT.glob("jobs/**/*.toml") if not p.name.endswith(".sweep.toml"))


def _mounts(service: str) -> dict[str, tuple[str, bool]]:
    """container path -> (host path, read-only)"""
    mounts = {}
    for volume in COMPOSE["services"][service]["volumes"]:
        host, container, *mode = volume.split(":")
        mounts[container] = (host, mode == ["ro"])
    return mounts


def _dockerfile_instruction(name: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


def test_compose_has_the_three_services_from_one_image():
    services = COMPOSE["services"]
    assert set(services) == {"gpu-job", "worker", "cpu-job"}
    assert {s["image"] for s in services.values()} == {"heartjobs:latest"}
    for service in services.values():
        assert service["working_dir"] == "/app"
        assert service.get("shm_size") or service.get("ipc") == "host"
        assert "${HOST_UID" in service["user"] and "${HOST_GID" in service["user"]  # artifacts: the host user's


@pytest.mark.parametrize("service", ["gpu-job", "worker"])
def test_gpu_services_reserve_one_nvidia_gpu(service):
    devices = COMPOSE["services"][service]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_cpu_job_has_no_gpu():
    cpu = COMPOSE["services"]["cpu-job"]
    assert "deploy" not in cpu and cpu["environment"]["CUDA_VISIBLE_DEVICES"] == ""


@pytest.mark.parametrize("service", ["gpu-job", "worker", "cpu-job"])
def test_mounts_jobs_and_data_read_only_and_artifacts_writable(service):
    mounts = _mounts(service)
    assert mounts["/app/jobs"] == ("./jobs", True)
    assert mounts["/app/data"] == ("./data", True)
    assert mounts["/app/artifacts"] == ("./artifacts", False)


def test_worker_serves_the_mounted_queue():
    worker = COMPOSE["services"]["worker"]
    assert _mounts("worker")["/app/queue"] == ("./queue", False)
    assert worker["entrypoint"] == ["heartjobs", "worker", "--watch", "--queue", "/app/queue"]


def test_dockerfile_installs_like_the_makefile():
    makefile = (ROOT / "Makefile").read_text()
    assert "bash scripts/install.sh $(BIN)/python --editable dev" in makefile
    assert "bash scripts/install.sh python" in _dockerfile_instruction("RUN")
    assert "libopenjp2-7" in DOCKERFILE
    base = _dockerfile_instruction("ARG")[0]
    pins = re.search(r"torch==([\d.]+)", (ROOT / "scripts" / "install.sh").read_text()).group(1)
    assert base.startswith(f"BASE_IMAGE=pytorch/pytorch:{pins}-cuda") and base.endswith("-runtime")


def test_entrypoint_is_an_installed_command_of_the_package():
    assert _dockerfile_instruction("ENTRYPOINT") == ['["heartjobs", "run"]']
    scripts = tomli.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["heartjobs"] == "heartjobs.cli:main"
    args = build_parser().parse_args(["run", "jobs/wgan_ldim200.toml"])  # the compose argument parses
    assert args.func.__name__ == "cmd_run" and str(args.spec) == "jobs/wgan_ldim200.toml"
    assert _dockerfile_instruction("WORKDIR") == ["/app"]
    assert _dockerfile_instruction("USER") == ["${UID}"]  # not root


@pytest.mark.parametrize("job", JOB_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_a_job_names_exists_in_the_container_layout(job):
    spec = parse_spec(job)
    mounts = _mounts("gpu-job")
    workdir = PurePosixPath("/app")

    def mount_of(path: Path) -> tuple[str, bool]:
        """The mount that holds `path` (relative to the working directory) inside the container; each
        mount maps ./X to /app/X, so the same relative path works on the host and in the container."""
        inside = workdir / PurePosixPath(path.as_posix())
        for target, (host, read_only) in mounts.items():
            if inside.is_relative_to(target):
                assert PurePosixPath(target).relative_to(workdir) == PurePosixPath(host).relative_to(".")
                return target, read_only
        raise AssertionError(f"{job.name}: {inside} is not mounted")

    assert not spec.data.prepared.is_absolute() and mount_of(spec.data.prepared) == ("/app/data", True)
    assert not spec.output.root.is_absolute() and mount_of(spec.output.root) == ("/app/artifacts", False)
    assert mount_of(job.relative_to(ROOT))[0] == "/app/jobs"


def test_dockerignore_keeps_data_and_results_out_of_the_image():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in ("data/", "artifacts/", "queue/", ".venv/", ".git/"):
        assert entry in ignored


def test_hadolint_passes_on_the_dockerfile():
    hadolint = Path(sys.executable).parent / "hadolint"  # from the dev extras, beside this Python
    result = subprocess.run([str(hadolint), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_make_sif_builds_from_the_image_compose_uses():
    makefile = (ROOT / "Makefile").read_text()
    image = re.search(r"^IMAGE \?= (\S+)$", makefile, re.M).group(1)
    assert image == COMPOSE["services"]["gpu-job"]["image"]
    recipe = makefile.split("\nsif:", 1)[1].split("\n\n", 1)[0]
    assert "apptainer build $(SIF) docker-daemon://$(IMAGE)" in recipe
