"""Adapters in and out of the library: importing a PEFT folder or a zip holding one (checked
before it enters), and exporting an entry as a zip."""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Optional

from engine.adapters.library import (
    ADAPTER_META,
    PEFT_CONFIG,
    adapter_method,
    check_name,
    copy_regular_files,
    damage,
    now,
    read_adapter_meta,
    read_json_object,
    resolve_adapter,
    unique_name,
)
from engine.core.atomic import staged_directory, staging_path, sweep_staging, write_json
from engine.core.names import MAX_NAME
from engine.errors import StudioError
from engine.paths import adapters_dir, writable_home


def validate_adapter_folder(path: Path) -> dict[str, Any]:
    """The folder's PEFT config, or a StudioError saying why this peft cannot use it.

    Checks what a load would trip over, before anything enters the library: the config
    (present, JSON, a method and settings this peft knows), and complete safetensors weights.
    """
    config_file = path / PEFT_CONFIG
    if not config_file.is_file():
        raise StudioError(f"{path} is not a PEFT adapter: it has no {PEFT_CONFIG}")
    config = read_json_object(config_file)
    if config is None:
        raise StudioError(f"{PEFT_CONFIG} in {path} is not a valid JSON object")
    _check_peft_config(config)
    problem = damage(path)
    if problem:
        raise StudioError(f"adapter {path.name} cannot be used: {problem}")
    return config


def _check_peft_config(config: dict[str, Any]) -> None:
    import dataclasses
    from importlib.metadata import version

    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    installed = version("peft")
    written_by = config.get("peft_version")
    if isinstance(written_by, str) and _version_key(written_by) > _version_key(installed):
        origin = f"was written by peft {written_by}, newer than the peft {installed} here, and"
    else:
        origin = "probably comes from a newer peft: it"
    upgrade = "upgrade peft (pip install -U peft) to use this adapter"
    peft_type = config.get("peft_type")
    if peft_type not in PEFT_TYPE_TO_CONFIG_MAPPING:
        raise StudioError(f"{PEFT_CONFIG} {origin} names a method peft {installed} does not know "
                          f"({peft_type!r}): {upgrade}")
    known = {f.name for f in dataclasses.fields(PEFT_TYPE_TO_CONFIG_MAPPING[peft_type])}
    unknown = sorted(set(config) - known)
    if unknown:
        # peft would drop these settings with a warning and load something other than what was trained.
        raise StudioError(f"{PEFT_CONFIG} {origin} uses settings peft {installed} does not know "
                          f"({', '.join(unknown)}): {upgrade}")


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def import_adapter(source: str | Path, name: Optional[str] = None) -> Path:
    """Copy an adapter folder, or a zip holding one, into the library under a free name.

    Anything wrong (a zip entry escaping its folder, a link, a newer peft's config, truncated
    weights) is refused before the entry appears; the library is left as it was.
    """
    writable_home()
    source = Path(source).expanduser()
    if not source.exists():
        raise StudioError(f"no such folder or file: {source}")
    if name is not None:
        name = check_name(name)
    scratch = staging_path(adapters_dir() / "import", "partial")
    try:
        if source.is_dir():
            root = source
        elif zipfile.is_zipfile(source):
            scratch.mkdir()
            _safe_extract(source, scratch)
            root = _adapter_root(scratch, source)
        else:
            raise StudioError(f"{source} is neither an adapter folder nor a zip file")
        _refuse_links(root)
        config = validate_adapter_folder(root)
        wanted = name or _default_name(source if root in (source, scratch) else root)
        if name and name.lower() in {p.name.lower() for p in adapters_dir().iterdir()}:
            raise StudioError(f"an adapter named {name!r} is already in the library")
        target = adapters_dir() / (name or unique_name(wanted))
        with staged_directory(target) as staging:
            copy_regular_files(root, staging)
            if not read_adapter_meta(staging):
                write_json(staging / ADAPTER_META, _imported_meta(config, source))
            if not (staging / "README.md").is_file():
                (staging / "README.md").write_text(_imported_card(target.name, config, source), encoding="utf-8")
        return target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _default_name(named_after: Path) -> str:
    """A library name from a folder's name or a zip's stem."""
    stem = named_after.name if named_after.is_dir() else named_after.stem
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).lstrip("-._")[:MAX_NAME]
    return cleaned or "imported-adapter"


def _safe_extract(archive: Path, into: Path) -> None:
    """Extract a zip, refusing absolute paths, '..' and links before writing a single file."""
    with zipfile.ZipFile(archive) as handle:
        members = handle.infolist()
        total = 0
        for member in members:
            parts = PurePosixPath(member.filename.replace("\\", "/")).parts
            if member.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise StudioError(f"{archive.name} is refused: entry {member.filename!r} points outside its folder")
            if stat.S_ISLNK(member.external_attr >> 16):
                raise StudioError(f"{archive.name} is refused: entry {member.filename!r} is a symbolic link")
            total += member.file_size
        free = shutil.disk_usage(into).free
        if total > free:
            raise StudioError(f"{archive.name} unpacks to {total:,} bytes but only {free:,} are free")
        try:
            for member in members:
                target = into.joinpath(*PurePosixPath(member.filename.replace("\\", "/")).parts)
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with handle.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise StudioError(f"{archive.name} cannot be unpacked: {exc}") from None


def _adapter_root(folder: Path, archive: Path) -> Path:
    roots = sorted({config.parent for config in folder.rglob(PEFT_CONFIG)})
    if not roots:
        raise StudioError(f"{archive.name} holds no PEFT adapter (no {PEFT_CONFIG} inside)")
    if len(roots) > 1:
        listed = ", ".join(str(r.relative_to(folder)) for r in roots[:4])
        raise StudioError(f"{archive.name} holds {len(roots)} adapters ({listed}): import them one at a time")
    return roots[0]


def _refuse_links(root: Path) -> None:
    for item in [root, *root.rglob("*")]:
        if item.is_symlink():
            raise StudioError(f"{item} is a symbolic link: LoRA Studio imports only plain files")


def _imported_meta(config: dict[str, Any], source: Path) -> dict[str, Any]:
    return {
        "base_model": config.get("base_model_name_or_path"),
        "method": adapter_method({}, config),
        "rank": config.get("r"),
        "alpha": config.get("lora_alpha"),
        "targets": config.get("target_modules"),
        "imported_from": str(source.resolve()),
        "created": now(),
    }


def _imported_card(name: str, config: dict[str, Any], source: Path) -> str:
    return (
        f"# {name}\n\nA {config.get('peft_type', 'PEFT')} adapter for "
        f"`{config.get('base_model_name_or_path') or 'an unnamed base model'}`, imported into LoRA Studio "
        f"from `{source.name}`.\n"
    )


def export_adapter(ref: str, output: str | Path, overwrite: bool = False) -> Path:
    """Write a library adapter as a zip holding one folder named after it.

    The zip is written beside its final name and renamed into place, so a reader never
    finds half an archive.
    """
    path = resolve_adapter(ref)
    output = Path(output).expanduser()
    if output.is_dir():
        output = output / f"{path.name}.zip"
    if output.suffix.lower() != ".zip":
        output = output.with_name(output.name + ".zip")
    if output.exists() and not overwrite:
        raise StudioError(f"{output} already exists: choose another file name")
    if not output.parent.is_dir():
        raise StudioError(f"folder {output.parent} does not exist")
    if path in output.resolve().parents:
        raise StudioError("the zip cannot be written inside the adapter's own folder")
    sweep_staging(output.parent)  # what a killed export left
    partial = staging_path(output, "partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for item in sorted(path.rglob("*")):
                if item.is_file() and not item.is_symlink():
                    archive.write(item, PurePosixPath(path.name, *item.relative_to(path).parts).as_posix())
        os.replace(partial, output)
    finally:
        if partial.exists():
            partial.unlink()
    return output
