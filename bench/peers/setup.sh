#!/usr/bin/env bash
# Create bench/peers/.venv with JoeyNMT 2.3.0, OpenNMT-py 3.5.1 and CTranslate2 next to
# torch==2.13.0 (the torch attnmt uses), separate from attnmt's own .venv.
#
#   bash bench/peers/setup.sh            # idempotent: does nothing once .venv/.setup-done exists
#   FORCE=1 bash bench/peers/setup.sh    # reinstall into the existing venv
#
# Installs run under `nice -n 19` because the machine is shared.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv"
STAMP="$VENV/.setup-done"
CONSTRAINTS="$REPO/constraints.txt"   # pins torch==2.13.0
PYTHON="${PYTHON:-python3}"

if [[ -f "$STAMP" && -z "${FORCE:-}" ]]; then
    echo "peers venv ready: $VENV (delete $STAMP or set FORCE=1 to reinstall)"
    exit 0
fi

[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=(nice -n 19 "$VENV/bin/python" -m pip install --disable-pip-version-check)

# 1. torch first, exactly the version attnmt uses (the CPU wheel in /opt/wheels when present).
"${PIP[@]}" "torch==2.13.0"

# 2. JoeyNMT, CTranslate2, scoring, and OpenNMT-py's runtime dependencies, all constrained so
#    nothing can swap torch out.
"${PIP[@]}" -c "$CONSTRAINTS" -r "$HERE/requirements-peers.txt"

# 3. OpenNMT-py declares torch<2.3, so it goes in without its dependency metadata; the runtime
#    dependencies it actually needs came in with step 2.
"${PIP[@]}" -c "$CONSTRAINTS" --no-deps "OpenNMT-py==3.5.1"

# Sanity: both toolkits import against torch 2.13.0.
"$VENV/bin/python" - <<'PY'
import torch, joeynmt, onmt, ctranslate2, sacrebleu, sentencepiece, psutil
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
print("torch", torch.__version__, "| joeynmt", joeynmt.__version__, "| onmt", onmt.__version__,
      "| ctranslate2", ctranslate2.__version__, "| sacrebleu", sacrebleu.__version__)
PY
date -u +%FT%TZ > "$STAMP"
echo "peers venv ready: $VENV"
