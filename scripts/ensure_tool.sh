# Sourced by the test scripts: `ensure_tool TOOL PACKAGE [APT-ARGS...]` installs Debian's
# PACKAGE when TOOL is not on PATH, so a fresh machine runs the tests as they are (root,
# or sudo). Only the tool is wanted: a package's service is never started here.
ensure_tool() {
  local tool=$1 package=$2
  shift 2
  if command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ]; then
    return 0
  fi
  local as_root=()
  if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "$tool is missing; installing it needs root: apt-get install -y $package" >&2
      exit 1
    fi
    as_root=(sudo)
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$tool is missing and there is no apt-get: install $package" >&2
    exit 1
  fi
  echo "$tool is missing: installing Debian's $package package" >&2
  local apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)
  # Try without refreshing the package lists first; refresh them when that fails.
  if ! "${apt[@]}" install -y -qq "$@" "$package" >/dev/null; then
    "${apt[@]}" update -qq && "${apt[@]}" install -y -qq "$@" "$package" >/dev/null || {
      echo "could not install $tool: apt-get install -y $package" >&2
      exit 1
    }
  fi
}
