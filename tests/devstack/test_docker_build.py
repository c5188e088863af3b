"""The Dockerfile's build, done the way it does it but without a Docker engine (none runs on
the development machine) and without a registry: the builder's context (its COPY lines, less
what the .dockerignore drops) is built into a wheelhouse, and the final stage's
`pip install --no-index --find-links=<wheelhouse> contact-provisioner` installs from it alone.
Only the project's own wheel is built here (its pinned dependencies would come from PyPI in the
real builder; here they are the test environment's): what this proves is that the image gets
every module, migration and template the service runs on."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def stages() -> list[str]:
    return re.split(r"^FROM ", DOCKERFILE.read_text(), flags=re.M)[1:]


def ignored(relative: str) -> bool:
    """The .dockerignore's exclusions below the allowed top-level paths."""
    patterns = [p for p in (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().split()
                if not p.startswith(("!", "#")) and p != "*"]
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(name, p.removeprefix("**/"))
               for p in patterns)


def builder_context(target: Path) -> Path:
    """What the builder stage's COPY lines put under its WORKDIR, with Docker's rules: a
    directory's contents go into the destination; a file goes into it when it ends in `/`
    (or there are several sources), else becomes it."""
    builder = stages()[0]
    workdir = Path(re.search(r"^WORKDIR (\S+)", builder, flags=re.M).group(1))
    for line in re.findall(r"^COPY (.+)$", builder, flags=re.M):
        *sources, dest = line.split()
        into = target / (Path(dest).relative_to(workdir) if dest.startswith("/") else dest)
        for source in sources:
            src = ROOT / source
            if src.is_dir():
                shutil.copytree(src, into, dirs_exist_ok=True, ignore=lambda d, names: [
                    n for n in names if ignored(os.path.relpath(Path(d) / n, ROOT))])
            else:
                folder = dest.endswith("/") or len(sources) > 1
                (into if folder else into.parent).mkdir(parents=True, exist_ok=True)
                shutil.copy(src, into / src.name if folder else into)
    return target


def run(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_the_image_installs_from_the_wheelhouse_alone_and_migrates(tmp_path):
    builder, final = stages()[0], stages()[-1]
    wheel_dir = re.search(r"pip wheel --wheel-dir (\S+) \.", builder).group(1)
    install = re.search(r"pip install (.+) contact-provisioner", final).group(1)
    assert "--no-index" in install and f"--find-links={wheel_dir}" in install

    context = builder_context(tmp_path / "src")
    assert not list(context.rglob("__pycache__"))
    wheelhouse = tmp_path / "wheels"
    # The builder's `pip wheel`, offline: no index, no isolated build environment to fetch.
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "--wheel-dir", str(wheelhouse), str(context))
    # The final stage's install, from the wheelhouse alone.
    site = tmp_path / "site"
    run(sys.executable, "-m", "pip", "install", "--no-index", "--no-deps",
        f"--find-links={wheelhouse}", "--target", str(site), "contact-provisioner")

    # Everything the service reads from its own files is in the install.
    for folder in ("worker/migrations/versions", "api_stub/console/templates",
                   "api_stub/console/static"):
        shipped = {p.name for p in (site / folder).iterdir() if p.is_file()}
        wanted = {p.name for p in (ROOT / folder).iterdir()
                  if p.is_file() and not p.name.endswith(".pyc")}
        assert shipped == wanted, folder

    # And it runs from there: `provisioner migrate`, then the init containers' check.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env.update({"PYTHONPATH": str(site), "PROVISIONER_VAR_DIR": str(tmp_path / "var"),
                "PROVISIONER_DATABASE_URL": f"sqlite:///{tmp_path / 'image.db'}"})
    where = run(sys.executable, "-c", "import worker; print(worker.__file__)", env=env,
                cwd=tmp_path)
    assert where.stdout.strip().startswith(str(site))
    run(sys.executable, "-m", "worker.cli", "migrate", env=env, cwd=tmp_path)
    check = run(sys.executable, "-m", "worker.cli", "migrate", "--check", env=env, cwd=tmp_path)
    assert check.stdout.startswith("schema at head")
