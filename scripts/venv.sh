# Sourced by ./run and ./check: make sure .venv exists and holds this checkout's package and dev tools.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RESOTO_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

ensure_venv() {
    local stamp="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
    if [[ ! -x "$VENV/bin/python" ]]; then
        "$PYTHON" -m venv "$VENV"
    fi
    if [[ ! -f "$stamp" ]]; then
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev]"
        rm -f "$VENV"/.installed-*
        touch "$stamp"
    fi
}

# Resoto's published client library, for the compatibility tests (tests/test_resoto_client.py): in a
# virtualenv of its own, since its distribution has the name of this project's `resotolib`.
RESOTO_CLIENT_VENV="${RESOTO_CLIENT_VENV:-$ROOT/.venv-resoto-client}"
RESOTO_CLIENT="$ROOT/tests/data/resoto-client-requirements.txt"  # resotolib==3.9.0 and its dependencies, pinned

ensure_resoto_client() {
    local stamp="$RESOTO_CLIENT_VENV/.installed-$(sha256sum "$RESOTO_CLIENT" | cut -c1-16)"
    if [[ ! -f "$stamp" ]]; then
        "$PYTHON" -m venv "$RESOTO_CLIENT_VENV"
        "$RESOTO_CLIENT_VENV/bin/python" -m pip install --quiet -r "$RESOTO_CLIENT"
        rm -f "$RESOTO_CLIENT_VENV"/.installed-*
        touch "$stamp"
    fi
}
