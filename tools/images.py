"""The project's container images, built with podman (or docker) from Debian packages: no Docker engine,
no registry.

    python tools/images.py build [toolkit] [arms]   # both by default (what `make images` runs)
    python tools/images.py lock                     # re-resolve images/toolkit/requirements.txt
    python tools/images.py names                    # the image references `build` produces, as JSON

toolkit: a Debian base made by mmdebstrap from the host's apt sources and imported as an image, then
images/toolkit/Containerfile (orchestrator, gates, load generator; the Python packages of
images/toolkit/requirements.txt exactly), exported with `podman save --format oci-archive` to build/images/.
arms: images/baseline and images/candidate FROM the user's sglang image (SGLANG_IMAGE), built only when
that image is in the engine's local storage (this tool never pulls).

Every image also gets a tag naming a hash of what it is built from (`:src-<hash>`); when that tag exists
nothing is built, so an unchanged tree rebuilds nothing. Settings (environment): ENGINE (podman or docker),
SGLANG_IMAGE, TOOLKIT_IMAGE, BASELINE_IMAGE, CANDIDATE_IMAGE, DEBIAN_SOURCES (the apt sources file
mmdebstrap uses; default: the host's), PIP_CERT (the CA bundle pip trusts during the build; default: the
host's). Podman reads images/containers.conf (this machine kind's quirks: runc, rlimits, host network).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
CONTAINERS_CONF = IMAGES / "containers.conf"
TOOLKIT_REQUIREMENTS = IMAGES / "toolkit" / "requirements.txt"
EXPORT_DIR = ROOT / "build" / "images"
CHART = ROOT / "helm" / "sglang-vlm-canary" / "Chart.yaml"

# Named with the `localhost/` domain, as podman stores a local build, so that a cluster node that imports
# the archive (`ctr images import`, `kind load image-archive`) holds exactly the name the chart refers to.
REPOSITORY = "localhost/sglang-vlm-canary"
DEFAULT_SGLANG_IMAGE = "lmsysorg/sglang:v0.5.23"
# The toolkit's own packages (the image's app/); what they import is its runtime set.
TOOLKIT_PACKAGES = ("gates", "infra", "loadtest", "rollout")
# The candidate's layer: the plugin and the strategies it runs (packaged by images/candidate/pyproject.toml).
PLUGIN_PACKAGES = ("sglang_plugin", "mminputs")

BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Documentation, manuals and translations: nothing in the images reads them (licences stay).
BASE_DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
)
HOST_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Debian packages the build needs per engine (docker itself is the user's to install).
ENGINE_TOOLS = {"podman": ("podman", "runc", "mmdebstrap"), "docker": ("mmdebstrap",)}


class BuildError(RuntimeError):
    """A build step failed; the message says which and why."""


def log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def shown(path: Path) -> str:
    """A path as messages show it: relative to the repository when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# -- names -----------------------------------------------------------------------------------------------
def project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def chart_app_version() -> str:
    match = re.search(r'^appVersion:\s*"?([^"\s]+)"?\s*$', CHART.read_text(), re.M)
    if not match:
        raise BuildError(f"no appVersion in {CHART.relative_to(ROOT)}")
    return match.group(1)


def image_names(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What `build` produces (and reads): the toolkit at the project's version, the arms at the chart's
    appVersion (the sglang version they carry), and the sglang base the arms are built from."""
    return {
        "toolkit": env.get("TOOLKIT_IMAGE") or f"{REPOSITORY}/toolkit:{project_version()}",
        "baseline": env.get("BASELINE_IMAGE") or f"{REPOSITORY}/baseline:{chart_app_version()}",
        "candidate": env.get("CANDIDATE_IMAGE") or f"{REPOSITORY}/candidate:{chart_app_version()}",
        "sglang": env.get("SGLANG_IMAGE") or DEFAULT_SGLANG_IMAGE,
    }


def repository_of(ref: str) -> str:
    """`repo:tag` -> `repo` (a registry port's colon is not a tag's)."""
    head, _, tail = ref.rpartition(":")
    return head if head and "/" not in tail else ref


# -- the engine ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Engine:
    """One container engine CLI: podman (reads images/containers.conf) or docker (BuildKit)."""

    command: str = "podman"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Engine:
        command = env.get("ENGINE", "podman")
        if Path(command).name not in ENGINE_TOOLS:
            raise BuildError(f"ENGINE={command!r}: use podman or docker")
        return cls(command)

    @property
    def kind(self) -> str:
        return Path(self.command).name

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.kind == "podman":
            env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
        else:
            env["DOCKER_BUILDKIT"] = "1"
        return env

    def run(
        self,
        *args: str,
        check: bool = True,
        capture: bool = True,
        timeout: float | None = None,
        background: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """`background`: at the lowest CPU priority (builds and exports share the machine's cores)."""
        proc = subprocess.run(
            [*(["nice", "-n", "19"] if background else []), self.command, *args],
            env=self.env(),
            text=True,
            capture_output=capture,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            detail = (proc.stderr or "").strip()[-2000:] if capture else "see the output above"
            raise BuildError(f"{self.kind} {' '.join(args[:3])} ... failed ({proc.returncode}): {detail}")
        return proc

    def exists(self, ref: str) -> bool:
        return self.run("image", "inspect", "--format", "{{.Id}}", ref, check=False).returncode == 0

    def inspect(self, ref: str, template: str) -> str:
        return self.run("image", "inspect", "--format", template, ref).stdout.strip()

    def image_id(self, ref: str) -> str:
        return self.inspect(ref, "{{.Id}}")

    def size(self, ref: str) -> int:
        return int(self.inspect(ref, "{{.Size}}"))

    def tag(self, source: str, target: str) -> None:
        self.run("tag", source, target)

    def tags_of(self, ref: str) -> list[str]:
        """Every name of the image `ref` names ([] when there is none)."""
        if not self.exists(ref):
            return []
        return list(json.loads(self.inspect(ref, "{{json .RepoTags}}")) or [])

    def untag(self, ref: str) -> None:
        self.run("rmi", ref, check=False)

    def import_rootfs(self, tarball: Path, ref: str) -> None:
        self.run("import", str(tarball), ref)

    def build(
        self,
        containerfile: Path,
        context: Path,
        tags: Sequence[str],
        build_args: Mapping[str, str],
        secrets: Mapping[str, Path],
    ) -> None:
        args = ["build", "-f", str(containerfile)]
        for tag in tags:
            args += ["-t", tag]
        for key, value in build_args.items():
            args += ["--build-arg", f"{key}={value}"]
        for name, path in secrets.items():
            args += ["--secret", f"id={name},src={path}"]
        self.run(*args, str(context), capture=False, background=True)

    def save(self, ref: str, path: Path) -> None:
        if self.kind == "podman":
            self.run("save", "--format", "oci-archive", "-o", str(path), ref, background=True)
        else:
            self.run("save", "-o", str(path), ref, background=True)


def ensure_tools(engine: Engine) -> None:
    """Install the Debian packages the build needs (first use only; as root or through sudo)."""
    missing = [tool for tool in ENGINE_TOOLS[engine.kind] if not shutil.which(tool)]
    if engine.kind == "docker" and not shutil.which(engine.command):
        raise BuildError("no docker command: install Docker, or build with podman (ENGINE=podman)")
    if not missing:
        return
    if not shutil.which("apt-get"):
        raise BuildError(
            f"missing {', '.join(missing)} and no apt-get to install them (a Debian host is needed)"
        )
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    log(f"installing Debian packages: {' '.join(missing)}")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        [*sudo, "apt-get", "update", "-q"],
        [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
    ):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"{' '.join(argv[:3])} failed: {proc.stderr.strip()[-2000:]}")


# -- what an image is built from -------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageSpec:
    """One image: its Containerfile, the context files (whose content is hashed), build arguments, the
    images it is built FROM (their ids are hashed), secrets (never hashed, never in a layer), and an
    optional step that derives more context from the staged files (e.g. a wheel from sources)."""

    ref: str
    containerfile: Path
    files: tuple[tuple[str, Path], ...] = ()
    build_args: tuple[tuple[str, str], ...] = ()
    bases: tuple[str, ...] = ()
    secrets: tuple[tuple[str, Path], ...] = ()
    prepare: Callable[[Path], None] | None = field(default=None, compare=False)


def source_hash(engine: Engine, spec: ImageSpec) -> str:
    digest = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        digest.update(f"{label}\0{len(data)}\0".encode())
        digest.update(data)

    add("containerfile", spec.containerfile.read_bytes())
    for name, path in sorted(spec.files):
        add(f"file:{name}", path.read_bytes())
    for key, value in spec.build_args:
        add(f"arg:{key}", value.encode())
    for base in spec.bases:
        add(f"base:{base}", engine.image_id(base).encode())
    return digest.hexdigest()[:16]


def package_files(packages: Sequence[str], under: str = "") -> tuple[tuple[str, Path], ...]:
    """Every file of the packages as the tree holds it, caches left out; `under` prefixes context paths."""
    files = []
    for package in packages:
        for path in sorted((ROOT / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.append((f"{under}{path.relative_to(ROOT).as_posix()}", path))
    return tuple(files)


@dataclass(frozen=True)
class Built:
    ref: str
    hash_ref: str
    image_id: str
    size: int
    built: bool  # False: the hash tag existed, nothing was built
    seconds: float

    def describe(self) -> str:
        how = f"built in {self.seconds:.0f}s" if self.built else "unchanged (nothing built)"
        return f"{self.ref} ({self.hash_ref}, {self.size / 1e6:.0f} MB): {how}"


def build_image(engine: Engine, spec: ImageSpec) -> Built:
    """Build `spec` unless an image tagged with its source hash exists; either way tag it `spec.ref`."""
    began = time.monotonic()
    source = source_hash(engine, spec)
    hash_ref = f"{repository_of(spec.ref)}:src-{source}"
    built = not engine.exists(hash_ref)
    if built:
        previous = engine.tags_of(spec.ref)  # the hash tag of what spec.ref named until now
        log(f"building {spec.ref} ({shown(spec.containerfile)}, source {source})")
        with tempfile.TemporaryDirectory(prefix="image-context-") as tmp:
            context = Path(tmp)
            for name, path in spec.files:
                (context / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, context / name)
            if spec.prepare:
                spec.prepare(context)
            engine.build(
                spec.containerfile,
                context,
                [spec.ref, hash_ref],
                dict(spec.build_args) | {"SOURCE_HASH": source},
                dict(spec.secrets),
            )
        for stale in previous:
            if stale.rpartition(":")[2].startswith("src-"):
                engine.untag(stale)  # an older build of this image: gone once untagged (shared layers stay)
    else:
        engine.tag(hash_ref, spec.ref)
    return Built(
        spec.ref, hash_ref, engine.image_id(hash_ref), engine.size(hash_ref), built, time.monotonic() - began
    )


# -- the Debian base -------------------------------------------------------------------------------------
def debian_sources(env: Mapping[str, str] = os.environ) -> Path | None:
    """The apt sources mmdebstrap reads: DEBIAN_SOURCES, else the host's (so a mirror the host uses is
    used here too); None leaves mmdebstrap its own default mirror."""
    if env.get("DEBIAN_SOURCES"):
        return Path(env["DEBIAN_SOURCES"])
    return next((p for p in HOST_SOURCES if p.is_file()), None)


def mmdebstrap_args(sources: Path | None) -> list[str]:
    args = ["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}"]
    args += [f"--dpkgopt={option}" for option in BASE_DPKG_OPTIONS]
    return [*args, BASE_SUITE]


def base_image(engine: Engine) -> str:
    """A Debian image with Python made from Debian packages by mmdebstrap, imported (first use only)."""
    sources = debian_sources()
    args = mmdebstrap_args(sources)
    digest = hashlib.sha256(json.dumps(args).encode())
    if sources:
        digest.update(sources.read_bytes())
    ref = f"{REPOSITORY}/debian-base:{BASE_SUITE}-{digest.hexdigest()[:12]}"
    if engine.exists(ref):
        return ref
    began = time.monotonic()
    log(f"making the Debian base {ref} with mmdebstrap ({', '.join(BASE_PACKAGES)})")
    with tempfile.TemporaryDirectory(prefix="debian-base-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        argv = ["nice", "-n", "19", *args, str(tarball)] + ([str(sources)] if sources else [])
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"mmdebstrap failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        engine.import_rootfs(tarball, ref)
    log(f"Debian base ready in {time.monotonic() - began:.0f}s")
    return ref


# -- the images ------------------------------------------------------------------------------------------
def ca_bundle(env: Mapping[str, str] = os.environ) -> Path:
    for candidate in (env.get("PIP_CERT"), env.get("SSL_CERT_FILE"), str(HOST_CA_BUNDLE)):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise BuildError("no CA bundle for pip (set PIP_CERT to a PEM file)")


def toolkit_spec(base: str, names: Mapping[str, str]) -> ImageSpec:
    return ImageSpec(
        ref=names["toolkit"],
        containerfile=IMAGES / "toolkit" / "Containerfile",
        files=(("requirements.txt", TOOLKIT_REQUIREMENTS), *package_files(TOOLKIT_PACKAGES, under="app/")),
        build_args=(("BASE_IMAGE", base), ("VERSION", project_version())),
        bases=(base,),
        secrets=(("pip-ca", ca_bundle()),),
    )


def baseline_spec(names: Mapping[str, str]) -> ImageSpec:
    return ImageSpec(
        ref=names["baseline"],
        containerfile=IMAGES / "baseline" / "Containerfile",
        build_args=(("SGLANG_IMAGE", names["sglang"]), ("SGLANG_VERSION", chart_app_version())),
        bases=(names["sglang"],),
    )


def build_plugin_wheel(context: Path) -> None:
    """The plugin as a wheel (pure Python) into context/dist/, so the image build needs no network."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(context / "dist"),
            str(context / "src"),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise BuildError(f"building the plugin wheel failed: {proc.stderr.strip()[-2000:]}")


def candidate_spec(names: Mapping[str, str]) -> ImageSpec:
    return ImageSpec(
        ref=names["candidate"],
        containerfile=IMAGES / "candidate" / "Containerfile",
        files=(
            ("src/pyproject.toml", IMAGES / "candidate" / "pyproject.toml"),
            ("entrypoint.sh", IMAGES / "candidate" / "entrypoint.sh"),
            *package_files(PLUGIN_PACKAGES, under="src/"),
        ),
        build_args=(("BASELINE_IMAGE", names["baseline"]),),
        bases=(names["baseline"],),
        prepare=build_plugin_wheel,
    )


def archive_path(ref: str, directory: Path = EXPORT_DIR) -> Path:
    return directory / f"sglang-vlm-canary-{ref.rpartition('/')[2].replace(':', '-')}.oci.tar"


def export(engine: Engine, built: Built, directory: Path = EXPORT_DIR) -> bool:
    """`podman save --format oci-archive` of the image, unless the archive already holds this build (False)."""
    path = archive_path(built.ref, directory)
    marker = path.with_name(path.name + ".id")
    if path.is_file() and marker.is_file() and marker.read_text().strip() == built.image_id:
        return False
    directory.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    engine.save(built.ref, partial)
    partial.replace(path)
    marker.write_text(built.image_id + "\n")
    return True


def build(which: Sequence[str], engine: Engine, names: Mapping[str, str] | None = None) -> dict[str, Built]:
    names = dict(names or image_names())
    ensure_tools(engine)
    results: dict[str, Built] = {}
    if "toolkit" in which:
        results["toolkit"] = build_image(engine, toolkit_spec(base_image(engine), names))
        log(results["toolkit"].describe())
        began = time.monotonic()
        saved = export(engine, results["toolkit"])
        archive = shown(archive_path(results["toolkit"].ref))
        log(f"exported {archive} in {time.monotonic() - began:.0f}s" if saved else f"{archive} is up to date")
    if "arms" in which:
        if not engine.exists(names["sglang"]):
            log(
                f"baseline and candidate: skipped: {names['sglang']} is not in {engine.kind}'s local storage "
                f"(`{engine.kind} pull {names['sglang']}` first, or set SGLANG_IMAGE)"
            )
        else:
            results["baseline"] = build_image(engine, baseline_spec(names))
            log(results["baseline"].describe())
            results["candidate"] = build_image(engine, candidate_spec(names))
            log(results["candidate"].describe())
    return results


# -- the toolkit's runtime set ---------------------------------------------------------------------------
LOCK_LINE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)\s*(?:#\s*(?P<note>.*))?$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    if not match:
        raise BuildError(f"cannot read a distribution name from {requirement!r}")
    return canonical(match.group(0))


def toolkit_requirements() -> list[str]:
    """The toolkit's runtime set: pyproject's [project] dependencies that the toolkit's packages import
    (modules mapped to distributions by the installed metadata; run in the project's virtualenv)."""
    import importlib.metadata

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from testkit.source_imports import product_packages, pyproject, third_party_imports

    imported = third_party_imports(TOOLKIT_PACKAGES, first_party=product_packages())
    providers = importlib.metadata.packages_distributions()
    unknown = sorted(module for module in imported if module not in providers)
    if unknown:
        raise BuildError(f"no installed distribution provides {', '.join(unknown)} (run in .venv)")
    wanted = {canonical(dist) for module in imported for dist in providers[module]}
    declared = pyproject()["project"]["dependencies"]
    undeclared = wanted - {requirement_name(r) for r in declared}
    if undeclared:
        raise BuildError(f"imported by the toolkit but not in [project] dependencies: {sorted(undeclared)}")
    return [r for r in declared if requirement_name(r) in wanted]


def read_lock(path: Path = TOOLKIT_REQUIREMENTS) -> dict[str, tuple[str, str]]:
    """canonical name -> (version, note) of every pinned line (the note names the direct requirement)."""
    pins: dict[str, tuple[str, str]] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = LOCK_LINE.match(line)
        if not match:
            raise BuildError(f"{path.name}: not a pinned requirement: {line!r}")
        pins[canonical(match["name"])] = (match["version"], (match["note"] or "").strip())
    return pins


def lock(path: Path = TOOLKIT_REQUIREMENTS) -> None:
    """Resolve the toolkit's runtime set with pip (binary wheels for this Python, which must be the base's
    3.11 on linux x86_64), preferring the versions installed here, and write every package pinned."""
    if sys.version_info[:2] != (3, 11) or os.uname().machine != "x86_64":
        raise BuildError("lock with CPython 3.11 on x86_64, the Debian base's Python")
    import importlib.metadata

    direct = toolkit_requirements()
    with tempfile.TemporaryDirectory(prefix="toolkit-lock-") as tmp:
        wanted = Path(tmp) / "requirements.in"
        wanted.write_text("\n".join(direct) + "\n")
        # The versions this virtualenv runs (and the tests test) win wherever they satisfy the requirements.
        tested = Path(tmp) / "constraints.txt"
        tested.write_text(
            "".join(f"{d.metadata['Name']}=={d.version}\n" for d in importlib.metadata.distributions())
        )
        report = Path(tmp) / "report.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--only-binary=:all:",
                "--quiet",
                "--report",
                str(report),
                "-r",
                str(wanted),
                "-c",
                str(tested),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise BuildError(
                f"pip could not resolve the toolkit's requirements: {proc.stderr.strip()[-2000:]}"
            )
        resolved = json.loads(report.read_text())["install"]
    by_name = {requirement_name(r): r for r in direct}
    lines = [
        "# The toolkit image's Python packages, exactly (tests/images/ compares the image with this file).",
        "# Generated by `python tools/images.py lock` from pyproject.toml's [project] dependencies that the",
        f"# toolkit's packages ({', '.join(TOOLKIT_PACKAGES)}) import, resolved to wheels for CPython 3.11",
        "# on linux x86_64 (the Debian base's Python). Lines marked `pyproject:` are those dependencies; the",
        "# rest is what they require.",
    ]
    for item in sorted(resolved, key=lambda i: canonical(i["metadata"]["name"])):
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        pin = f"{name}=={version}"
        spec = by_name.get(canonical(name))
        lines.append(f"{pin:<36}# pyproject: {spec}" if spec else pin)
    path.write_text("\n".join(lines) + "\n")
    log(f"wrote {path.relative_to(ROOT)}: {len(resolved)} packages, {len(direct)} from pyproject")


IMAGE_KINDS = ("toolkit", "arms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="build the images (toolkit, arms)")
    # No argparse `choices` here: with nargs="*" Python 3.11 checks the empty default against them and
    # refuses a plain `build`.
    build_cmd.add_argument("which", nargs="*", metavar="{toolkit,arms}", help="default: both")
    sub.add_parser("lock", help="re-resolve images/toolkit/requirements.txt")
    sub.add_parser("names", help="the image references `build` produces, as JSON")
    args = parser.parse_args(argv)
    unknown = [w for w in getattr(args, "which", []) if w not in IMAGE_KINDS]
    if unknown:
        build_cmd.error(f"unknown image(s) {unknown}; choose from {list(IMAGE_KINDS)}")
    try:
        if args.command == "names":
            print(json.dumps(image_names(), indent=2))
        elif args.command == "lock":
            lock()
        else:
            began = time.monotonic()
            build(args.which or list(IMAGE_KINDS), Engine.from_env())
            log(f"done in {time.monotonic() - began:.0f}s")
    except BuildError as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
