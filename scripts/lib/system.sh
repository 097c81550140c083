# Shared by scripts that need packages of the operating system (Debian/Ubuntu).
# ensure_chromium: Debian's chromium at /usr/bin/chromium, for the report's browser test
# (playwright drives it; playwright's own browser downloads are never used).

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "need root (or sudo) to run: $*" >&2
    return 1
  fi
}

ensure_chromium() {
  [ -x /usr/bin/chromium ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "no /usr/bin/chromium and no apt-get: the report's browser test will be skipped" >&2
    return 0
  fi
  echo "installing Debian's chromium (for the report's browser test)" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
}
