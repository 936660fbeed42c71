#!/usr/bin/env bash
# Install the MOFTransformer backbone's extra into a Python environment that already holds torch 2.13:
#   1. moftransformer 2.2.0 itself with --no-deps (its declared pins, torch<2 and pytorch-lightning 1.7,
#      cannot be met beside the project's torch),
#   2. the dependencies it really imports, pinned (pyproject.toml's `moftransformer` extra),
#   3. GRIDAY, its energy-grid tool, rebuilt from the package's own C++ sources with the system g++/make
#      (the wheel also ships prebuilt objects and binaries; they are removed first),
# and checks that torch was not changed and that the backbone imports.
# Usage: bash scripts/install_moftransformer.sh [PYTHON]   (default: .venv/bin/python)
set -euo pipefail
PY="${1:-.venv/bin/python}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"

torch_before="$("$PY" -c 'import torch; print(torch.__version__)')"
echo "== moftransformer extra: torch $torch_before"
"$PY" -m pip install --quiet --no-deps "moftransformer==2.2.0"
# the pinned run-time dependencies: pyproject.toml's `moftransformer` extra (read here so that the project
# itself is not reinstalled)
mapfile -t deps < <("$PY" - "$ROOT/pyproject.toml" <<'PYEOF'
import sys
try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib
with open(sys.argv[1], "rb") as fh:
    print("\n".join(tomllib.load(fh)["project"]["optional-dependencies"]["moftransformer"]))
PYEOF
)
echo "== pinned dependencies: ${deps[*]}"
"$PY" -m pip install --quiet "${deps[@]}"
torch_after="$("$PY" -c 'import torch; print(torch.__version__)')"
if [ "$torch_before" != "$torch_after" ]; then
    echo "ERROR: installing the moftransformer extra changed torch ($torch_before -> $torch_after)" >&2
    exit 1
fi

# locate the package without importing it (its import needs mofbalora's timm stand-in)
PKG="$("$PY" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("moftransformer").origin))')"
GRIDAY="$PKG/libs/GRIDAY"
echo "== building GRIDAY from source in $GRIDAY"
for tool in g++ make; do
    command -v "$tool" >/dev/null || { echo "ERROR: GRIDAY needs $tool (apt-get install g++ make)" >&2; exit 1; }
done
rm -f "$GRIDAY"/*.o "$GRIDAY/libgriday.a" "$GRIDAY/scripts/grid_gen" "$GRIDAY/scripts/grid2visit" \
      "$GRIDAY/scripts/grid2props" "$GRIDAY/scripts/grid2COTA"
if ! { make -s -C "$GRIDAY" -j"$(nproc)" && make -s -C "$GRIDAY/scripts" grid_gen; } >"$GRIDAY/build.log" 2>&1; then
    echo "ERROR: building GRIDAY failed; compiler output:" >&2
    tail -n 30 "$GRIDAY/build.log" >&2
    exit 1
fi
# GRIDAY prints its usage on stderr when run without arguments (the package's own install check)
usage="$("$GRIDAY/scripts/grid_gen" 2>&1 >/dev/null || true)"
case "$usage" in
    *"spacing atom_type force_field input_cssr egrid_stem"*) echo "== GRIDAY built: $GRIDAY/scripts/grid_gen" ;;
    *) echo "ERROR: GRIDAY was built but does not run: $usage" >&2; exit 1 ;;
esac

cd "$ROOT"
"$PY" -c 'from mofbalora.backbones.moftransformer_prep import griday_path, import_moftransformer
m = import_moftransformer(); print("== moftransformer", m.__version__, "imports; GRIDAY at", griday_path())'
