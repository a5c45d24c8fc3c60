#!/usr/bin/env bash
# Set up everything skymesh's tests, examples and CI need, from a fresh clone on a
# machine with Python >= 3.11 and apt:
#
#   - a project venv at .venv (PyPI's unrelated `node`/`harbor` distributions must
#     never share site-packages with skymesh), created if missing, with
#     `pip install -e '.[dev]'`; reused while current: .venv/.skymesh-stamp holds the
#     venv's path and a hash of pyproject.toml, any constraints*.txt and the
#     interpreter; a change re-installs (a new interpreter or path: a new venv);
#   - Debian packages: zookeeper, redis-server, default-jre-headless (the servers
#     scripts/servers.sh starts), debootstrap (deploy/build-images.sh, the e2e
#     tests), chromium + chromium-driver (the lobby's browser test, via selenium),
#     docker-compose when a Docker engine answers but no compose tool does,
#     python3-venv when the interpreter has no ensurepip, gcc (and Debian's
#     python3.X-dev for a Debian interpreter) for the compiled core. `apt-get update`
#     runs only when something is missing; `sudo` only when not root;
#   - the compiled core: `python -m node.core.build` when node/core's build is
#     missing or older than its sources (node.core.native; without gcc, pure Python).
#
# Nothing goes into the system interpreter. Idempotent; prints nothing when all is
# present. `--check` installs nothing: exits 1 listing what is missing or stale.
#
# Environment: PYTHON (the interpreter for the venv; default python3.11, else python3).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="$root/.venv"
stamp_file="$venv/.skymesh-stamp"
check=0
case "${1:-}" in
    "") ;;
    --check) check=1 ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

log() { echo "bootstrap: $*" >&2; }
die() { log "error: $*"; exit 1; }

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    python="$(command -v python3.11 || command -v python3 || true)"
fi
[[ -n "$python" ]] || die "no python3 on PATH (skymesh needs Python >= 3.11)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$python is $("$python" -V 2>&1); skymesh needs Python >= 3.11 (set PYTHON=...)"

# --- Debian packages -------------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" || -x "/sbin/$1" ]]; }
missing=()
[[ -f /usr/share/java/zookeeper.jar ]] || missing+=(zookeeper)
have redis-server && have redis-cli || missing+=(redis-server)
have java || missing+=(default-jre-headless)
have debootstrap || missing+=(debootstrap)
# The lobby's web page is tested in a real headless Chromium (tests/cluster/test_lobby_browser.py).
have chromium || missing+=(chromium)
have chromedriver || missing+=(chromium-driver)
# The e2e tests drive the compose files when a Docker engine answers.
if have docker && timeout 20 docker info >/dev/null 2>&1 && ! have docker-compose \
    && ! docker compose version >/dev/null 2>&1; then
    missing+=(docker-compose)
fi
# The compiled core (node.core.native) needs a C compiler and the interpreter's headers.
have gcc || missing+=(gcc)
if ! "$python" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
    case "$python" in
        /usr/bin/*) missing+=("python$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-dev") ;;
        *) log "no Python.h for $python: the core will run as pure Python" ;;
    esac
fi
# Debian's python3 ships venv's ensurepip separately.
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1 && [[ ! -x "$venv/bin/python" ]]; then
    case "$python" in
        /usr/bin/*) missing+=("python3-venv" "python$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv") ;;
        *) die "$python has no ensurepip/venv module; install one that does (or set PYTHON=...)" ;;
    esac
fi

if ((${#missing[@]})); then
    if ((check)); then
        log "missing Debian packages: ${missing[*]}"
    else
        command -v apt-get >/dev/null 2>&1 \
            || die "missing ${missing[*]} and no apt-get here: install them by hand"
        sudo=()
        if ((EUID != 0)); then
            command -v sudo >/dev/null 2>&1 || die "missing ${missing[*]}: run as root or install sudo"
            sudo=(sudo)
        fi
        log "installing ${missing[*]}"
        # Another process may hold the dpkg lock (a parallel bootstrap): wait for it.
        apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600)
        "${apt[@]}" update -qq >/dev/null
        "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

# --- the venv ----------------------------------------------------------------------
constraints=()
for f in constraints*.txt deploy/constraints*.txt; do
    [[ -f "$f" ]] && constraints+=("$f")
done
want="$( { echo "$root"; "$python" -c 'import sys; print(sys.version)';
           cat pyproject.toml; for f in "${constraints[@]}"; do echo "$f"; cat "$f"; done; } |
         sha256sum | cut -d' ' -f1)"

current() {  # the venv exists, its interpreter runs, and the stamp matches
    [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c '' 2>/dev/null \
        && [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$venv"$'\n'"$want" ]]
}

if ! current; then
    if ((check)); then
        log ".venv is missing or stale (pyproject.toml or constraints changed)"
        exit 1
    fi
    # One installer per checkout: two test runs starting together must not both pip.
    exec 8>"${TMPDIR:-/tmp}/skymesh-bootstrap-$(echo "$root" | sha256sum | cut -c1-12).lock"
    flock -w 900 8 || die "timed out waiting for another bootstrap of $root"
    if ! current; then
        # A venv made by another interpreter (or broken) is replaced, not patched.
        pyver() { "$1" -c 'import sys; print(sys.version)' 2>/dev/null; }
        if [[ -e "$venv" && "$(pyver "$venv/bin/python")" != "$(pyver "$python")" ]]; then
            log "recreating .venv (made by another interpreter)"
            rm -rf "$venv"
        fi
        # A venv is not relocatable (script shebangs, activate): a moved checkout's is redone.
        if [[ -f "$stamp_file" && "$(head -n 1 "$stamp_file")" != "$venv" ]]; then
            log "recreating .venv (the checkout moved)"
            rm -rf "$venv"
        fi
        if [[ ! -x "$venv/bin/python" ]]; then
            log "creating .venv with $python"
            "$python" -m venv "$venv"
        fi
        log "installing skymesh and its dev tools into .venv (pip install -e '.[dev]')"
        cargs=()
        for f in "${constraints[@]}"; do cargs+=(-c "$f"); done
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]' "${cargs[@]}"
        printf '%s\n%s\n' "$venv" "$want" >"$stamp_file"
    fi
    exec 8>&-
fi

# --- the compiled core ---------------------------------------------------------------
# mailbox.py and runner.py compiled in place by Cython (a dev extra) when a build is
# missing or older than its sources (~11 s); without gcc the pure-Python core runs.
if have gcc && [[ -x "$venv/bin/python" ]]; then
    if ! "$venv/bin/python" -c 'import sys; from node.core import native; sys.exit(not native.current())' 2>/dev/null; then
        if ((check)); then
            log "the compiled core is missing or stale (python -m node.core.build)"
            missing+=(compiled-core)
        else
            log "compiling the core (python -m node.core.build)"
            "$venv/bin/python" -m node.core.build >/dev/null 2>&1 \
                || log "compiling the core failed: the pure-Python core runs (python -m node.core.build shows why)"
        fi
    fi
fi
((${#missing[@]} == 0 || ! check)) || exit 1
