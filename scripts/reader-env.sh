# Sourced by test.sh, quickstart.sh and bench scripts: exports SLUICE_PYTHON, a Python with the
# PyPI `deltalake` and `pyarrow` packages (the independent Delta reader), in a venv outside the
# clone so it is made once per machine and never depends on what else is installed.
SLUICE_VENV=${SLUICE_VENV:-/var/tmp/sluice-venv}
if ! "$SLUICE_VENV/bin/python" -c "import deltalake, pyarrow" 2>/dev/null; then
  echo "reader-env: installing deltalake and pyarrow into $SLUICE_VENV" >&2
  if ! /usr/bin/python3 -m venv "$SLUICE_VENV" 2>/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    /usr/bin/python3 -m venv "$SLUICE_VENV"
  fi
  "$SLUICE_VENV/bin/pip" install --quiet --disable-pip-version-check deltalake pyarrow
fi
export SLUICE_PYTHON=$SLUICE_VENV/bin/python
