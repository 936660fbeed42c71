#!/usr/bin/env bash
# Install the MOF chemistry checker (mofchecker-next 0.1.2, GPL-2.0) into the environment of PYTHON.
#
# mofchecker-next depends on libconeangle, which has wheels for Python <= 3.10 only; elsewhere its source build
# needs a Fortran compiler and downloads fortran-stdlib from git. So: try the normal install; if libconeangle
# cannot be had, install mofchecker-next with --no-deps beside its other (pinned) dependencies. mofbalora then
# runs every check except geometrically_exposed_metal (the only one that calls libconeangle).
# torch is never touched (checked at the end).
set -euo pipefail
PY="${1:-python}"
before="$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo none)"
if "$PY" -m pip install --quiet "mofchecker-next==0.1.2" 2>/dev/null; then
    echo "mofchecker-next installed with libconeangle"
else
    "$PY" -m pip install --quiet --no-deps "mofchecker-next==0.1.2"
    "$PY" -m pip install --quiet "structuregraph-helpers==0.0.9" "element-coder==0.0.8" "rustworkx>=0.14"
    echo "mofchecker-next installed without libconeangle (no wheel for this Python): geometrically_exposed_metal is not checked"
fi
after="$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo none)"
if [ "$before" != "$after" ]; then
    echo "error: installing the checks changed torch ($before -> $after)" >&2
    exit 1
fi
"$PY" -c "from mofbalora.checks import import_checker; import_checker(); print('mofchecker-next imports')"
