#!/usr/bin/env bash
# Idempotent setup of a fresh machine for `make run` / `make test`: the PostgreSQL server package and the
# project's virtualenv. Re-runs are cheap: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PG_PACKAGE=postgresql-15
VENV=.venv
STAMP=$VENV/.stamp

say() { printf 'bootstrap: %s\n' "$*"; }

is_root() { [ "$(id -u)" = 0 ]; }

apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        say "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- PostgreSQL server binaries (initdb, pg_ctl, postgres): local clusters for tests and the demo ---------
have_postgres() { compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; }
if have_postgres; then
    say "postgresql server: found"
elif is_root; then
    apt_install "$PG_PACKAGE"
    have_postgres || { say "installing $PG_PACKAGE did not provide /usr/lib/postgresql/*/bin/postgres"; exit 1; }
else
    say "PostgreSQL server binaries are missing; install them, then re-run:"
    say "    sudo apt-get install -y $PG_PACKAGE"
    exit 2
fi

# --- Java and Maven: the local Kafka broker (jars fetched once from Maven Central into .tools/kafka) ------
need_pkgs=()
command -v java >/dev/null || need_pkgs+=(default-jre-headless)
command -v mvn  >/dev/null || need_pkgs+=(maven)
if [ "${#need_pkgs[@]}" = 0 ]; then
    say "java and mvn: found"
elif is_root; then
    apt_install "${need_pkgs[@]}"
else
    say "Java/Maven are missing; install them, then re-run:"
    say "    sudo apt-get install -y ${need_pkgs[*]}"
    exit 2
fi

# --- Python >= 3.11 ----------------------------------------------------------------------------------------
python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
PYTHON=""
for candidate in python3 python3.13 python3.12 python3.11; do
    if command -v "$candidate" >/dev/null && python_ok "$candidate"; then PYTHON=$candidate; break; fi
done
if [ -z "$PYTHON" ]; then
    say "Python >= 3.11 not found; install it (Debian 12: apt-get install -y python3 python3-venv)"
    exit 2
fi

# --- virtualenv and the project (editable, with test, dev and pool extras) ---------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        if is_root; then
            apt_install python3-venv
        else
            say "the Python venv module is missing; install it: sudo apt-get install -y python3-venv"
            exit 2
        fi
    fi
    say "creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
fi

want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    say "python packages: up to date"
else
    say "pip install -e '.[test,dev,pool]' (log: $VENV/pip.log)"
    # pip relays the build backend's warnings even with -q: keep them in the log, show it on failure.
    if ! { "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip &&
           "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test,dev,pool]'; } \
         >"$VENV/pip.log" 2>&1; then
        tail -n 40 "$VENV/pip.log" >&2
        say "pip install failed"
        exit 1
    fi
    printf '%s\n' "$want" >"$STAMP"
fi
say "ready"
