"""The pinned llama.cpp: the library llama-cpp-python compiled at set-up, and the converter kit
of the same commit (``tools/llama_kit.py`` unpacks it into ``<venv>/share/lora-studio/llama.cpp``).

The set-up builds llama.cpp from source; when that build fails the rest of the studio is
installed anyway and the set-up leaves ``UNAVAILABLE`` in the kit's place with its reason. Every
GGUF feature asks ``require()`` first, so the user reads that reason instead of an import error.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from engine.errors import StudioError

# Where another kit is (an installer's bundle, a llama.cpp checkout of the same version).
KIT_ENV = "LORA_STUDIO_LLAMA_KIT"
UNAVAILABLE_FILE = "UNAVAILABLE"
_SETUP_HINT = "run `make setup` again (it needs cmake and a C++ compiler) to build it"


@dataclass(frozen=True)
class Availability:
    ok: bool
    why: str  # one line when not ok
    version: Optional[str]  # llama-cpp-python's
    kit: Path


def kit_dir() -> Path:
    """The converter kit's folder (it may not exist)."""
    override = os.environ.get(KIT_ENV)
    return Path(override) if override else Path(sys.prefix) / "share" / "lora-studio" / "llama.cpp"


def availability() -> Availability:
    kit = kit_dir()
    refused = kit.with_name(kit.name + "." + UNAVAILABLE_FILE)
    if refused.is_file():
        reason = refused.read_text(encoding="utf-8", errors="replace").strip().splitlines() or ["unknown"]
        return Availability(False, f"llama.cpp could not be built at set-up ({reason[-1]}): {_SETUP_HINT}", None, kit)
    try:
        import llama_cpp
    except ImportError as exc:
        return Availability(False, f"llama.cpp is not installed ({exc}): {_SETUP_HINT}", None, kit)
    except OSError as exc:  # the package is there but its compiled library does not load
        return Availability(False, f"llama.cpp's library does not load ({exc}): {_SETUP_HINT}", None, kit)
    version = getattr(llama_cpp, "__version__", None)
    if not (kit / "convert_hf_to_gguf.py").is_file():
        return Availability(False, f"llama.cpp's converter is missing from {kit}: {_SETUP_HINT}", version, kit)
    kit_version = (kit / "VERSION").read_text(encoding="utf-8").strip() if (kit / "VERSION").is_file() else None
    if kit_version != version:
        return Availability(False, f"llama.cpp's converter ({kit_version}) is not from the installed llama.cpp "
                                   f"({version}): {_SETUP_HINT}", version, kit)
    return Availability(True, "", version, kit)


def require() -> Availability:
    """The pinned llama.cpp, or a StudioError saying in one line why GGUF export cannot run."""
    found = availability()
    if not found.ok:
        raise StudioError(found.why)
    return found
