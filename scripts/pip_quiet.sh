# Sourced by the set-up scripts: `pip_quiet PYTHON WHAT -- PIP_INSTALL_ARGS...` runs
# `PYTHON -m pip install PIP_INSTALL_ARGS...` with its output appended to $SE_SETUP_LOG (default
# a temporary file) and prints one "[setup] WHAT" line; if pip fails, its output is printed and
# the script exits with pip's status. pip's chatter (index locations, resolver notes) stays in
# the log, so a successful set-up shows only what it did.
pip_quiet() {
  local py=$1 what=$2
  shift 3
  local log=${SE_SETUP_LOG:-$(mktemp -t se-setup-pip.XXXXXX)}
  echo "[setup] $what"
  echo "### pip install $*" >>"$log"
  local status=0
  "$py" -m pip install --disable-pip-version-check "$@" >>"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    echo "[setup] error: pip install $* failed (exit $status); pip's output ($log):" >&2
    tail -n 60 "$log" >&2
    exit "$status"
  fi
}
