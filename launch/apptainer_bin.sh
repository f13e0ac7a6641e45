#!/usr/bin/env bash
# Run the launch scripts inside an Apptainer image: writes `python` and `ray` wrappers into OUT_DIR that run the
# same command in IMAGE (GPUs via --nv) with VENV's Python, so Ray's workers import the recipe installed there.
#   bash launch/apptainer_bin.sh IMAGE.sif VENV OUT_DIR
#   export PATH=OUT_DIR:$PATH     # then sbatch launch/... or bash launch/... as usual
# Folders the job reads or writes (the recipe, REWARDMAP_RUNS, DATA_DIR, HF_HOME) must be mounted: set
# APPTAINER_BIND (Apptainer's own variable, e.g. APPTAINER_BIND=/shared), which srun passes to every node.
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: bash launch/apptainer_bin.sh IMAGE.sif VENV OUT_DIR" >&2
    exit 2
fi
abs() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
image=$(abs "$1")
venv=$(abs "$2")
out=$3
[ -r "$image" ] || { echo "[rewardmap] error: no readable image $image" >&2; exit 1; }
mkdir -p "$out"
write_wrapper() {
    local name=$1
    shift
    {
        echo '#!/usr/bin/env bash'
        printf 'exec apptainer exec --nv %q' "$image"
        printf ' %q' "$@"
        echo ' "$@"'
    } >"$out/$name"
    chmod +x "$out/$name"
}
write_wrapper python "$venv/bin/python"
write_wrapper ray "$venv/bin/python" -m ray.scripts.scripts
echo "wrote $out/python and $out/ray (image $image, Python $venv/bin/python)"
