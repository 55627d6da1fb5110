# shellcheck shell=bash
# Sourced by the scripts in this folder: the repository root ($ROOT), the
# project's virtualenv ($VENV, default .venv, or $SASYNC_VENV) and its
# Python ($PY), made and kept up to date by ensureVenv.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${SASYNC_VENV:-$ROOT/.venv}
PY=$VENV/bin/python

say() { echo "[sasync] $*" >&2; }
die() { say "$*"; exit 1; }

# Print the first Python >= 3.11 found ($SASYNC_PYTHON wins).
findPython() {
    local candidate
    for candidate in ${SASYNC_PYTHON:-} python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# ensureVenv EXTRAS: make $VENV if it is missing, and install the project
# into it (editable) with those extras, e.g. "test,lint,docs". Reinstalls only
# when setup.py, pyproject.toml or the set of packages changed since, or when
# no earlier install covered these extras.
ensureVenv() {
    local extras=$1 python want stamp have extra covered
    if [ ! -x "$PY" ]; then
        python=$(findPython) || die "Python >= 3.11 is needed: install it" \
            "(apt-get install python3 python3-venv) or set SASYNC_PYTHON=/path/to/python3"
        say "creating the virtualenv $VENV with $python"
        "$python" -m venv "$VENV" || {
            rm -rf "$VENV"
            die "could not create a virtualenv: install Python's venv module (apt-get install python3-venv)"
        }
    fi
    want=$(cd "$ROOT" && { cat setup.py pyproject.toml; ls -d ./*/__init__.py 2>/dev/null; } | sha256sum)
    for stamp in "$VENV"/.sasync-installed-*; do
        [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] || continue
        have=-${stamp##*/.sasync-installed-}-
        covered=1
        for extra in ${extras//,/ }; do
            case $have in *-"$extra"-*) ;; *) covered=0 ;; esac
        done
        [ "$covered" = 1 ] && return 0
    done
    say "installing sAsync[$extras] into $VENV (the first time takes a minute or two)"
    "$PY" -m pip install --disable-pip-version-check -q -e "${ROOT}[${extras}]"
    echo "$want" >"$VENV/.sasync-installed-${extras//,/-}"
}
