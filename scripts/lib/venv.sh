# Shared by scripts/test, scripts/demo and the benchmarks: create or reuse .venv and
# install the package (editable) with the given extras when setup.cfg changed since.
find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "access-crawler needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

ensure_venv() {
  local extras="$1" python stamp
  if [ ! -x .venv/bin/python ]; then
    python=$(find_python)
    echo "creating .venv with $python" >&2
    "$python" -m venv .venv
  fi
  stamp=".venv/.installed-$(echo "$extras" | tr ',' '-')"
  if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "installing access-crawler[$extras] into .venv" >&2
    .venv/bin/python -m pip install --quiet --upgrade pip >&2
    .venv/bin/python -m pip install --quiet -e ".[$extras]" >&2
    touch "$stamp"
  fi
}
