#!/usr/bin/env bash
# Download what OpenNMT-py 3.5.1 needs on the GPU machine and that its image lacks, as wheels
# for its Python (3.12 by default) into .whl/ (ignored through .git/info/exclude).
#   bash bench/gpu/fetch_wheels.sh            # cp312 wheels into .whl
#   PYV=3.11 DEST=/tmp/whl311 bash bench/gpu/fetch_wheels.sh   # for a dry run here
# spacy is left out on purpose (see run_device.sh); torch, numpy, sentencepiece, sacrebleu,
# PyYAML, six and tensorboard are in the image.
set -euo pipefail
PYV="${PYV:-3.12}"
DEST="${DEST:-.whl}"
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
    manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done
for pkg in OpenNMT-py==3.5.1 ConfigArgParse==1.9.0 pyonmttok==1.38.1 RapidFuzz==3.14.6 \
    pyahocorasick==2.3.1 fasttext-wheel==0.9.2; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" \
        --implementation cp "${PLATFORMS[@]}" -d "$DEST" "$pkg"
done
du -sh "$DEST"
