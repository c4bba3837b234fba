#!/usr/bin/env bash
# Installs the system tools qcompile's backends use, when they are missing, with apt-get
# (through sudo when not root): g++ (the FPGA C simulation; linking TVM host libraries),
# make and perl (the rtl target's Verilator build), gcc-aarch64-linux-gnu and qemu-user
# (ARM artifacts, cross-built and run under emulation), ccache (each Verilator build's
# runtime compiled once, not per build), and python3-venv where `python3 -m venv` cannot work without it. Where that is impossible
# (no apt-get, no root and no sudo, no network) it says in one line per tool what to install,
# and `make demo` and the tests skip the steps that need it. Always exits 0.
set -u
PYTHON=${PYTHON:-python3}

missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need g++ g++
need make make
need perl perl
need aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
need qemu-aarch64 qemu-user
need ccache ccache
# Debian's python3 lacks ensurepip (so venv) until python3-venv is installed.
if ! "$PYTHON" -c "import ensurepip" >/dev/null 2>&1; then
    v=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
    missing+=("python${v:-3}-venv")
fi
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 && sudo=(sudo) || sudo=(none)
fi
if command -v apt-get >/dev/null 2>&1 && [ "${sudo[*]}" != none ]; then
    echo "installing ${missing[*]} with apt-get${sudo:+ (sudo)}"
    "${sudo[@]}" apt-get update -qq >/dev/null &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        echo "apt-get could not install ${missing[*]}"
fi
still=()
for pkg in "${missing[@]}"; do
    case $pkg in
        g++ | make | perl | ccache) command -v "$pkg" >/dev/null 2>&1 || still+=("$pkg") ;;
        gcc-aarch64-linux-gnu) command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || still+=("$pkg") ;;
        qemu-user) command -v qemu-aarch64 >/dev/null 2>&1 || still+=("$pkg") ;;
        *) "$PYTHON" -c "import ensurepip" >/dev/null 2>&1 || still+=("$pkg") ;;
    esac
done
for pkg in "${still[@]}"; do
    echo "note: $pkg is not installed and could not be installed here; install it" \
        "(apt-get install $pkg) or the steps that need it are skipped"
done
exit 0
