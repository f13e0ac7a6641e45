#!/usr/bin/env bash
# Regenerate the GPU locks, constraints/gpu-py311.txt and gpu-py312.txt, from setup.py's `gpu` extra for Linux
# x86_64 with glibc 2.31 or newer (manylinux_2_31: Ubuntu 20.04+, Debian 11+, RHEL/Rocky 9), then check that
# every pinned version installs from a wheel there; a lock is replaced only when both steps pass.
#   bash launch/lock_gpu.sh                        # Python 3.11 and 3.12
#   PYTHON_VERSIONS="3.10" bash launch/lock_gpu.sh # other versions (writes constraints/gpu-py310.txt)
# Needs uv (`pip install uv`, or UV=/path/to/uv) and an index serving the Linux CUDA wheels (PyPI does); uv
# reads package metadata only, nothing is installed or built. The one source package allowed in the lock is
# antlr4-python3-runtime (pure Python, hydra-core's parser; PyPI has no wheel of it). flash-attn is not in the
# lock: it builds from source against the installed torch (constraints/gpu-build.txt, README "GPU cluster").
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-uv}
platform=x86_64-manylinux_2_31
source_ok=antlr4-python3-runtime

for version in ${PYTHON_VERSIONS:-3.11 3.12}; do
    out="constraints/gpu-py${version//./}.txt"
    tmp=$(mktemp "$out.tmp-XXXXXX")
    trap 'rm -f "$tmp"' EXIT
    {
        echo "# GPU lock: setup.py's install_requires + [gpu] extra for Python $version on Linux $platform."
        echo "# Regenerate with: bash launch/lock_gpu.sh (uv pip compile; README \"GPU cluster\")."
        echo "# Use: pip install -c $out -e \".[gpu]\", then the flash-attn step (constraints/gpu-build.txt)."
    } >"$tmp"
    "$uv" pip compile setup.py --extra gpu --python-platform "$platform" --python-version "$version" \
        --no-header --quiet >>"$tmp"
    # Every pin must have a wheel for the platform (flash-attn-like source builds belong in gpu-build.txt).
    "$uv" pip compile "$tmp" --no-deps --only-binary :all: --no-binary "$source_ok" \
        --python-platform "$platform" --python-version "$version" --quiet -o /dev/null
    mv "$tmp" "$out"
    trap - EXIT
    echo "wrote $out"
done
