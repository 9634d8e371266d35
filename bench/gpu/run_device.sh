#!/usr/bin/env bash
# GPU checks and the side-by-side benchmark, in one go, on a lent GPU machine (see README there).
#
# The GPU machine has one Python with PyTorch, SentencePiece, sacreBLEU and PyYAML, no network
# and no ../shared. So the caller carries, in ignored folders of the repo:
#   .whl/      OpenNMT-py 3.5.1 and the runtime wheels it imports that the machine lacks
#              (bench/gpu/fetch_wheels.sh downloads them)
#   .devdata/  a copy of ../shared/data/tatoeba-eng-spa
# and runs, from the repo root:  bash bench/gpu/run_device.sh "$OUT"
#
# Order: environment, the CUDA tests (tests/test_cuda.py), then run_peers.py on the GPU for the
# Transformer (fp32 and fp16 rows) and the LSTM (fp32). Every step has its own time limit, and
# a failing step does not stop the ones after it. Everything lands in OUT.
#
# Knobs (environment): PY (python3), DEVICE (cuda), MINUTES (0.5 per toolkit), LIMIT (0 = all
# pairs), WHEELS (.whl), TRANSFORMER_EXTRA (--fp16), T_TESTS / T_TRANSFORMER / T_LSTM (seconds
# per step). A dry run on a CPU machine, with cp311 wheels from fetch_wheels.sh:
#   PY=.venv/bin/python DEVICE=cpu MINUTES=0.2 LIMIT=3000 WHEELS=/tmp/whl311 TRANSFORMER_EXTRA= \
#       bash bench/gpu/run_device.sh /tmp/device-out
set -u
OUT="${1:-${OUT:-/tmp/device-out}}"
PY="${PY:-python3}"
DEVICE="${DEVICE:-cuda}"
MINUTES="${MINUTES:-0.5}"
LIMIT="${LIMIT:-0}"
WHEELS="${WHEELS:-.whl}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
step() { echo "== $(date -u +%T) $*"; }

step environment
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
"$PY" -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"
echo "cpus $(nproc)"

step "peers: wheels into /tmp/site, stand-in for spacy"
SITE=/tmp/site
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl || echo "wheel install failed"
# OpenNMT-py imports all its transforms at start-up; only the terminology transform (not used
# here) needs spacy, whose wheel and dependencies do not fit the carried 64 MiB. An empty module
# stands in for it; any use of it would fail loudly with an AttributeError.
mkdir -p /tmp/stubs/spacy
echo '"""Empty stand-in for spacy (unused OpenNMT-py terminology transform)."""' \
    >/tmp/stubs/spacy/__init__.py
export PYTHONPATH="$SITE:/tmp/stubs"
"$PY" -W ignore -c "import onmt.bin.train, onmt.bin.translate, onmt; print('onmt', onmt.__version__)" \
    2>&1 | tail -3

# The data where the configs and tests look for it.
mkdir -p ../shared/data
[ -d ../shared/data/tatoeba-eng-spa ] || cp -r .devdata/tatoeba-eng-spa ../shared/data/

step "CUDA tests"
timeout "${T_TESTS:-70}" "$PY" -m pytest -q -p no:cacheprovider -o addopts= tests/test_cuda.py \
    2>&1 | tee "$OUT/test_cuda.log" | tail -25

run_peers() {  # arch, time limit, extra run_peers options
    local arch=$1 limit=$2
    shift 2
    step "peers: $arch on $DEVICE, $MINUTES min per toolkit $*"
    ATTNMT_PYTHON="$(command -v "$PY")" timeout "$limit" "$PY" -W ignore bench/peers/run_peers.py \
        --device "$DEVICE" --arch "$arch" --minutes "$MINUTES" --limit "$LIMIT" \
        --peers opennmt-py --threads 4 --ckpt-every "${CKPT_EVERY:-50}" --translate-timeout 60 \
        --work "/tmp/peers" "$@" 2>&1 | tee "$OUT/peers_$arch.log" | grep -v "^\[" | tail -30
    tar -czf "$OUT/logs_$arch.tgz" -C /tmp/peers "$arch/logs" "$arch/train.json" "$arch/partial.json" 2>/dev/null
}
# shellcheck disable=SC2086  # TRANSFORMER_EXTRA is a list of options
run_peers transformer "${T_TRANSFORMER:-320}" ${TRANSFORMER_EXTRA---fp16}
run_peers lstm "${T_LSTM:-175}"
cp bench/results/peers_*.json "$OUT/" 2>/dev/null
step done
ls "$OUT"
