"""A full disk, a read-only disk and a damaged request store (issue 13, item 5): one clear line, no temp file left."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from nift import artifacts
from nift.cli import main
from nift.errors import InputError

CORPUS = "".join(json.dumps({"text": f"document {i} has a handful of words so that it can be cut"}) + "\n"
                 for i in range(4))


class _FullDisk:
    """A file whose every write and flush fails with `code`, as on a full disk; close flushes, so it fails too."""

    def __init__(self, path: Path, code: int):
        self.path, self.code = str(path), code
        self.closed = False
        self.real = open(path, "w")  # noqa: SIM115 - the temp file atomic_open made, closed below

    def _fail(self):
        raise OSError(self.code, "No space left on device" if self.code == errno.ENOSPC else "Read-only file system",
                      self.path)

    def write(self, s):
        self._fail()

    def flush(self):
        self._fail()

    def fileno(self):
        return self.real.fileno()

    def close(self):
        if not self.closed:
            self.closed = True
            self.real.close()
            self._fail()


@pytest.fixture
def full_disk(monkeypatch):
    def install(code: int = errno.ENOSPC):
        monkeypatch.setattr(artifacts, "open", lambda path, *a, **k: _FullDisk(path, code), raising=False)
    return install


def test_atomic_open_removes_its_temp_file_when_the_disk_is_full(tmp_path: Path, full_disk):
    full_disk()
    with pytest.raises(OSError) as e:
        artifacts.write_jsonl(tmp_path / "data.jsonl", [{"a": 1}])
    assert e.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # neither data.jsonl nor data.jsonl.tmpPID


@pytest.mark.parametrize("code,needle", [(errno.ENOSPC, "no space left on the device"),
                                         (errno.EROFS, "the file system is read-only")])
def test_a_full_or_read_only_disk_is_one_line(tmp_path: Path, full_disk, capsys, code, needle):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(CORPUS)
    full_disk(code)
    rc = main(["prepare", "--input", str(corpus), "--run-dir", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not [p for p in (tmp_path / "run").rglob("*") if ".tmp" in p.name]


def test_a_damaged_request_store_is_one_line(prepared: Path, fake, capsys):
    from nift.llm.store import Store

    store = prepared / "distill" / "cache.sqlite"
    store.parent.mkdir(exist_ok=True)
    store.write_bytes(b"this is not an SQLite database, it was cut by a crash" * 100)
    with pytest.raises(InputError, match=r"cache.sqlite: the request store is damaged"):
        Store(store)
    rc = main(["distill", "--run-dir", str(prepared), "--teacher.backend", "openai", "--teacher.model", "fake-1",
               "--teacher.base-url", fake.openai_url, "--teacher.api-key-env", fake.key_env, "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{store}: the request store is damaged" in err and "Traceback" not in err, err
    assert fake.chats == []  # nothing was sent
