#!/usr/bin/env bash
# One stage of a session on the lent GPU machine (README "What remains for a GPU"), run there
# from the checkout with the image's own JAX, PyTorch and the rest, and $OUT as the folder
# whose files come back:
#
#   bash utils/gpu_check/device_session.sh check                      # call 1: carry device_carry/1 .whl
#   bash utils/gpu_check/device_session.sh train KEYWORD=VALUE ...    # call 2: carry device_carry/2 .whl
#
# Both stages first install the carried wheels (.whl: what the image lacks, tensorboardX) and
# keep the carried part of the dataset in a staging folder, which lasts while the machine is
# held; once both parts are there, datasets/fer2013_raw.h5 is rebuilt and checked
# (utils.gpu_check.carry). check: the GPU's name and driver, the versions, utils.gpu_check and
# the benchmark (JSON); train: one launcher run on the rebuilt dataset with the keywords given,
# its model and reports copied to $OUT. Each step has a time limit so that the call ends inside
# the device's 10 minutes; BENCH_ARGS, TRAIN_SECONDS, CARRY and STAGING override the defaults
# (a dry run on a CPU uses them to stay short).
set -u -o pipefail
stage=${1:?give the stage: check or train}
shift
: "${OUT:?OUT must name the folder whose files come back}"
CARRY=${CARRY:-device_carry}
STAGING=${STAGING:-/tmp/fer_carry}
TRAIN_SECONDS=${TRAIN_SECONDS:-420}
BENCH_ARGS=${BENCH_ARGS:---networks A S V --batch-sizes 128 512 --dtypes float32 bfloat16 --peers torch torch_cl --rounds 3 --no-pipeline}
PYTHON=${PYTHON:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MPLBACKEND=Agg

if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
"$PYTHON" -m utils.gpu_check.carry unpack "$CARRY" --stash "$STAGING" --to datasets 2>&1 \
    | tee "$OUT/carry.txt"

case $stage in
check)
    { nvidia-smi || echo "no nvidia-smi"; } >"$OUT/nvidia-smi.txt" 2>&1
    "$PYTHON" -c "import sys, jax, jaxlib, numpy, cv2; print(sys.version); \
print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'numpy', numpy.__version__, \
'opencv', cv2.__version__); print(jax.devices())" >"$OUT/versions.txt" 2>&1
    timeout 200 "$PYTHON" -m utils.gpu_check 2>&1 | tee "$OUT/gpu_check.txt"
    # shellcheck disable=SC2086 # BENCH_ARGS is a list of options
    timeout 270 "$PYTHON" -m utils.benchmark $BENCH_ARGS --json "$OUT/benchmark.json" 2>&1 \
        | tee "$OUT/benchmark.txt"
    ;;
train)
    test -f datasets/fer2013_raw.h5 || { echo "the dataset is not rebuilt yet: carry the"\
        "other part" | tee -a "$OUT/train.txt"; exit 1; }
    run=/tmp/gpu_run
    timeout "$TRAIN_SECONDS" "$PYTHON" run_experiment.py dataset=datasets/fer2013_raw.h5 \
        savename=$run progress=False "$@" 2>&1 | tee "$OUT/train.txt"
    for name in model.msgpack results.json history.csv cost.png; do
        test -f "$run/$name" && cp "$run/$name" "$OUT/"
    done
    ;;
*)
    echo "unknown stage $stage: give check or train"; exit 2 ;;
esac
