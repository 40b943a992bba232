"""The container, checked without a Docker engine: compose.yaml, the Dockerfile, and the paths jobs name.
The image built and run for real is `make docker-test` (scripts/docker-test.sh); hadolint checks the
Dockerfile in `make lint`."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml

from heartjobs.cli.main import build_parser
from heartjobs.spec.loading import parse_spec

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
JOB_FILES = sorted(p for p in ROOT.glob("jobs/**/*.toml") if not p.name.endswith(".sweep.toml"))


def _mounts(service: str) -> dict[str, tuple[str, bool]]:
    """container path -> (host path, read-only); a host path may be ${VAR:-default}"""
    mounts = {}
    for volume in COMPOSE["services"][service]["volumes"]:
        host, container, mode = re.fullmatch(r"(\$\{[^}]*\}|[^:]+):([^:]+)(?::(ro|rw))?", volume).groups()
        mounts[container] = (host, mode == "ro")
    return mounts


def _default(value: str) -> str:
    """The default of a compose ${VAR:-default}."""
    return re.fullmatch(r"\$\{\w+:-(.*)\}", value).group(1)


def _dockerfile_instruction(name: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


SERVICES = ("gpu-job", "worker", "cpu-job", "cpu-worker", "cli")


def test_compose_services_run_one_image_as_the_caller():
    services = COMPOSE["services"]
    assert set(services) == set(SERVICES)
    assert {_default(s["image"]) for s in services.values()} == {"heartjobs:latest"}
    for service in services.values():
        assert service["working_dir"] == "/app"
        assert service.get("shm_size") or service.get("ipc") == "host"
        assert "${HOST_UID" in service["user"] and "${HOST_GID" in service["user"]  # artifacts: the host user's
        assert service["build"]["secrets"] == ["pip_conf", "pip_ca"]  # pip's configuration: build secrets


@pytest.mark.parametrize("service", ["gpu-job", "worker"])
def test_gpu_services_reserve_the_gpu_named_by_GPU(service):
    devices = COMPOSE["services"][service]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "device_ids": ["${GPU:-0}"], "capabilities": ["gpu"]}]


@pytest.mark.parametrize("service", ["cpu-job", "cpu-worker", "cli"])
def test_cpu_services_have_no_gpu(service):
    cpu = COMPOSE["services"][service]
    assert "deploy" not in cpu and cpu["environment"]["CUDA_VISIBLE_DEVICES"] == ""


@pytest.mark.parametrize("service", SERVICES)
def test_mounts_jobs_read_only_artifacts_writable_and_the_shared_lock_folder(service):
    mounts = _mounts(service)
    assert mounts["/app/jobs"] == ("./jobs", True)
    assert mounts["/app/data"] == ("./data", service != "cli")  # only the cli service prepares data
    assert mounts["/app/artifacts"] == ("./artifacts", False)
    assert mounts["/app/weights"] == ("./weights", True)
    # the device locks: one host folder for the host's workers and every container's
    lock_dir = re.search(r"HEARTJOBS_LOCK_DIR=(\S+)", DOCKERFILE).group(1)
    host, read_only = mounts[lock_dir]
    assert _default(host) == lock_dir == "/tmp/heartjobs-locks" and not read_only


@pytest.mark.parametrize("service", ["worker", "cpu-worker"])
def test_workers_serve_the_mounted_queue_restart_and_have_time_to_checkpoint(service):
    worker = COMPOSE["services"][service]
    assert _mounts(service)["/app/queue"] == ("./queue", False)
    assert worker["entrypoint"][:5] == ["heartjobs", "worker", "--watch", "--queue", "/app/queue"]
    # the GPU worker measures one job while the next trains (OVERLAP, 1 unless set); the CPU one does not, whose
    # cores a measurement beside training would only share
    overlap = ["--overlap", "${OVERLAP:-1}"] if service == "worker" else []
    assert worker["entrypoint"][5:] == overlap
    assert worker["restart"] == "unless-stopped"
    assert _default(worker["stop_grace_period"]) == "300s"


def test_dockerfile_installs_like_the_makefile():
    makefile = (ROOT / "Makefile").read_text()
    assert "bash scripts/install.sh $(BIN)/python --editable dev" in makefile
    assert any("bash scripts/install.sh python " in run for run in _dockerfile_instruction("RUN"))
    assert "libopenjp2-7" in DOCKERFILE
    base = _dockerfile_instruction("ARG")[0]
    pins = re.search(r"torch==([\d.]+)", (ROOT / "scripts" / "install.sh").read_text()).group(1)
    assert base.startswith(f"BASE_IMAGE=pytorch/pytorch:{pins}-cuda") and base.endswith("-runtime")


def test_entrypoint_is_an_installed_command_of_the_package():
    assert _dockerfile_instruction("ENTRYPOINT") == ['["heartjobs", "run"]']
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["heartjobs"] == "heartjobs.cli:main"
    args = build_parser().parse_args(["run", "jobs/wgan_ldim200.toml"])  # the compose argument parses
    assert args.func.__name__ == "cmd_run" and str(args.spec) == "jobs/wgan_ldim200.toml"
    assert _dockerfile_instruction("WORKDIR") == ["/app"]
    assert _dockerfile_instruction("USER") == ["1000:1000"]  # not root; compose runs it as the caller


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


def test_make_sif_builds_from_the_image_compose_uses():
    makefile = (ROOT / "Makefile").read_text()
    image = re.search(r"^IMAGE \?= (\S+)$", makefile, re.M).group(1)
    assert image == _default(COMPOSE["services"]["gpu-job"]["image"])
    recipe = makefile.split("\nsif:", 1)[1].split("\n\n", 1)[0]
    assert "apptainer build $(SIF) docker-daemon://$(IMAGE)" in recipe
