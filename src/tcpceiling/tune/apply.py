"""`tune --apply` and `--restore`: write the plan's files under a root (the host's
/, or an image or a test tree), keep what was there, and put it back exactly.

Nothing foreign is overwritten: a file at one of the plan's paths is replaced only
when tcpceiling wrote it (its first line says so), and backed up first. A manifest
(ROOT/var/lib/tcpceiling/tune/manifest.json) lists every file written, what it held
before, every directory created and every live sysctl changed, so --restore undoes
exactly that and refuses to touch a file changed since.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from tcpceiling.errors import InputError
from tcpceiling.tune.files import PlannedFile

STATE = Path("var/lib/tcpceiling/tune")
MANIFEST = "manifest.json"
SCHEMA = 1
OURS = "written by tcpceiling tune"


@dataclass(frozen=True)
class Entry:
    path: str  # where the file is on the target system
    sha256: str  # of what tcpceiling wrote
    backup: str | None  # the file name in STATE holding what was there, if anything
    mode: int  # the mode to restore (the old file's, or ours)


@dataclass(frozen=True)
class Manifest:
    entries: tuple[Entry, ...]
    created_dirs: tuple[str, ...]  # outermost first
    sysctls_before: tuple[tuple[str, str], ...] = ()  # live values replaced (root / only)
    schema_version: int = SCHEMA


def under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _mkdirs(root: Path, rel: Path) -> list[str]:
    """Create rel's directories under root; the ones created, outermost first."""
    made: list[str] = []
    for part in reversed([rel, *rel.parents][:-1]):
        target = root / part
        if not target.exists():
            target.mkdir(mode=0o755)
            made.append("/" + str(part))
    return made


def _write(path: Path, data: bytes, mode: int) -> None:
    """Beside the target, then renamed over it: never a half-written file."""
    tmp = path.with_name(f".{path.name}.tcpceiling-tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)


def _check_ours(root: Path, files: tuple[PlannedFile, ...]) -> None:
    for f in files:
        target = under(root, f.path)
        if target.exists() and OURS not in target.read_text(errors="replace").split("\n", 2)[0]:
            raise InputError(
                f"{target} exists and was not written by tcpceiling: merge the plan into it by "
                "hand (the dry run prints it) or move it away"
            )


def read_manifest(root: Path) -> Manifest | None:
    path = under(root, str(STATE / MANIFEST))
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if data.get("schema_version") != SCHEMA:
        raise InputError(f"{path}: unknown schema_version {data.get('schema_version')}")
    return Manifest(
        entries=tuple(Entry(**e) for e in data["entries"]),
        created_dirs=tuple(data["created_dirs"]),
        sysctls_before=tuple((k, v) for k, v in data["sysctls_before"]),
    )


def _save(root: Path, manifest: Manifest) -> None:
    text = json.dumps(asdict(manifest), indent=2) + "\n"
    _write(under(root, str(STATE / MANIFEST)), text.encode(), 0o600)


def write_files(root: Path, files: tuple[PlannedFile, ...]) -> Manifest:
    """Write the files under root with backups; the manifest of what was done."""
    if read_manifest(root) is not None:
        raise InputError(f"{under(root, str(STATE))} holds an earlier --apply: run --restore first")
    _check_ours(root, files)
    created = _mkdirs(root, STATE)
    entries: list[Entry] = []
    for i, f in enumerate(files):
        target = under(root, f.path)
        created += _mkdirs(root, Path(f.path.lstrip("/")).parent)
        backup, mode = None, 0o644
        if target.exists():
            backup, mode = f"backup-{i}", target.stat().st_mode & 0o7777
            _write(under(root, str(STATE / backup)), target.read_bytes(), 0o600)
        data = f.content.encode()
        entries.append(Entry(f.path, _digest(data), backup, mode))
        _save(root, Manifest(tuple(entries), tuple(created)))
        _write(target, data, 0o644)
    manifest = Manifest(tuple(entries), tuple(created))
    _save(root, manifest)
    return manifest


def record_sysctls(root: Path, before: tuple[tuple[str, str], ...]) -> None:
    manifest = read_manifest(root)
    assert manifest is not None
    _save(root, Manifest(manifest.entries, manifest.created_dirs, before))


def _conflicts(root: Path, manifest: Manifest) -> list[str]:
    out = []
    for e in manifest.entries:
        target = under(root, e.path)
        if target.exists() and _digest(target.read_bytes()) != e.sha256:
            out.append(str(target))
    return out


def restore_files(root: Path) -> Manifest:
    """Put back every file the last --apply replaced, remove the ones it created and
    the directories it made; the manifest that was undone."""
    manifest = read_manifest(root)
    if manifest is None:
        raise InputError(f"nothing to restore: no {under(root, str(STATE / MANIFEST))}")
    changed = _conflicts(root, manifest)
    if changed:
        raise InputError(f"changed since --apply, not restored: {', '.join(changed)}")
    state = under(root, str(STATE))
    for e in reversed(manifest.entries):
        target = under(root, e.path)
        if e.backup:
            _write(target, (state / e.backup).read_bytes(), e.mode)
            (state / e.backup).unlink()
        elif target.exists():
            target.unlink()
    (state / MANIFEST).unlink()
    for d in reversed(manifest.created_dirs):
        path = under(root, d)
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return manifest


def sysctl_path(procfs: Path, key: str) -> Path:
    return procfs / "sys" / Path(*key.split("."))


def load_sysctls(
    procfs: Path, values: list[tuple[str, str]]
) -> tuple[list[tuple[str, str]], list[str]]:
    """Write each value to procfs/sys (what `sysctl -p FILE` does); the values they
    replaced, and the keys that could not be written (with why)."""
    before: list[tuple[str, str]] = []
    failed: list[str] = []
    for key, value in values:
        path = sysctl_path(procfs, key)
        try:
            old = " ".join(path.read_text().split())
            path.write_text(value + "\n")
        except OSError as exc:
            failed.append(f"{key}: {exc.strerror or exc}")
            continue
        before.append((key, old))
    return before, failed
