#!/usr/bin/env bash
# The GPU recipe (docs/gpu.md): mer_jax's benchmarks and a short LOSO run on a machine that has
# JAX, Flax, Optax, Orbax, OpenCV, torch and tensorboard but no TensorFlow, TFDS, clu,
# ml-collections or Grain.
#
#   benchmarks/device_check.sh prepare             # HERE (network, TensorFlow for the builder):
#                                                  # wheels + records into build/device_check/
#   benchmarks/device_check.sh run [--smoke]       # THERE: install the wheels, run, JSON in $OUT
#
# prepare downloads the Python 3.12 wheels of what the GPU image lacks (WHEELS below; pure-Python
# or manylinux x86-64, no dependencies pulled), checks that their declared dependencies are
# carried or in the image (GPU_IMAGE below), builds the synthetic_me/tiny records (ArrayRecord)
# the input suite and the trainer read, and checks that everything fits in what travels (64 MiB
# with the working tree). run installs the wheels with --no-deps into a folder on PYTHONPATH,
# then runs, with `import tensorflow` failing: an import check of the trainer, the train /
# inference / input / magnify suites in bfloat16 with MFU (`benchmarks.run`), and a two-fold
# LOSO run of configs/default.py:tiny; it writes JSON, Markdown and the log under $OUT.
# --smoke: tiny models and sizes on the CPU, to prove the recipe here (a few minutes on 2 cores).
#
# Environment: PYTHON (default python3), DEVICE_CHECK_DIR (default build/device_check, ignored
# by git), OUT (default $DEVICE_CHECK_DIR/out), DEVICE_CHECK_INSTALL=0 to use the running
# Python's packages instead of installing the wheels (a CPU smoke on another Python version).
set -euo pipefail

usage() {
  sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

command=${1:-}
[[ $command == prepare || $command == run ]] || usage
shift
smoke=0
for arg in "$@"; do
  case $arg in
    --smoke) smoke=1 ;;
    *) echo "device_check.sh: unknown argument '$arg' (expected --smoke)" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
python=${PYTHON:-python3}
dir=$(realpath -m "${DEVICE_CHECK_DIR:-build/device_check}")
wheels=$dir/wheels
records=$dir/tfds
site=${DEVICE_CHECK_SITE:-/tmp/mer_jax_device_site}
# What travels in one device call: the working tree plus the carried folder.
travel_limit_mib=64

# The wheels the GPU image lacks, at the versions this project is tested with. promise has no
# wheel on the index (sdist only, pure Python): prepare builds one.
WHEELS=(
  ml-collections==1.1.0 grain==0.2.18 array-record==0.8.6 tensorflow-datasets==4.9.10
  tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0 immutabledict==4.3.1
  toml==0.10.2 clu==0.0.12 portpicker==1.6.0 dm-tree==0.1.10
)
SDIST_WHEELS=(promise==2.3)
# Python packages of the GPU image (docs/gpu.md; the device notes' list of 2026-11-17, the
# names that matter here). A declared dependency outside this list and the carried wheels is
# reported by prepare.
GPU_IMAGE="absl-py attrs chex cloudpickle etils filelock flatbuffers flax fsspec humanize jax
jaxlib ml-dtypes msgpack numpy opencv-python-headless opt-einsum optax orbax-checkpoint packaging
pillow protobuf psutil pyarrow pyyaml requests rich scipy setuptools simplejson six tensorboard
tensorstore toolz tqdm typing-extensions urllib3 wrapt zipp matplotlib torch"

# `import tensorflow` fails as on a machine without it (no finder finds it; find_spec gives None).
# sys.modules["tensorflow"] = None would not do: etils and TFDS test `"tensorflow" in
# sys.modules` and then reach for it. On the GPU machine this changes nothing.
no_tf='import benchmarks.without_tensorflow'  # import tensorflow fails from here on

prepare() {
  mkdir -p "$wheels" "$records"
  local platforms=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
           manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
  done
  echo "[prepare] wheels for CPython 3.12 -> $wheels"
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d "$wheels" "${WHEELS[@]}"
  "$python" -m pip wheel -q --no-deps -w "$wheels" "${SDIST_WHEELS[@]}"

  # synthetic_me/default's records take 193 MiB and cannot travel; the tiny tier (9 clips of
  # 24 frames, 64 px; 2 MiB) feeds both the input suite and the LOSO run.
  local tiers=(tiny)
  echo "[prepare] synthetic_me records (${tiers[*]}) -> $records"
  "$python" - "$records" "${tiers[@]}" <<'PY'
import sys
from configs import default as default_config
from mer_jax import input_pipeline
data_dir, tiers = sys.argv[1], sys.argv[2:]
for tier in tiers:
  config = default_config.get_config(tier).dataset
  config.data_dir = data_dir
  builder = input_pipeline.prepare_builder(input_pipeline.get_builder(config), config)
  print(f"[prepare] {builder.info.full_name}: {builder.info.splits.total_num_examples} clips")
PY
  rm -rf "$records/downloads"

  echo "[prepare] checks"
  "$python" - "$dir" "$wheels" "$travel_limit_mib" "$GPU_IMAGE" <<'PY'
import email.parser, glob, json, os, re, subprocess, sys, zipfile
from packaging.requirements import Requirement
dir_, wheel_dir, limit_mib, image = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
paths = sorted(glob.glob(os.path.join(wheel_dir, "*.whl")))
carried, needs = {}, {}
for path in paths:
  with zipfile.ZipFile(path) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    fields = email.parser.Parser().parsestr(z.read(meta).decode())
  name = norm(fields["Name"])
  if name in carried:
    sys.exit(f"[prepare] two wheels of {name}: {carried[name]} and {path}; keep one")
  carried[name] = os.path.basename(path)
  environment = {"python_version": "3.12", "python_full_version": "3.12.3",
                 "sys_platform": "linux", "platform_system": "Linux",
                 "platform_machine": "x86_64", "implementation_name": "cpython",
                 "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
  for text in fields.get_all("Requires-Dist") or []:
    req = Requirement(text)
    if req.marker is None or req.marker.evaluate(environment):
      needs.setdefault(norm(req.name), []).append(name)
present = {norm(n) for n in image.split()}
uncovered = {n: by for n, by in sorted(needs.items()) if n not in carried and n not in present}
# Declared but never imported on the paths run here (checked by `run`'s import check).
for name, by in uncovered.items():
  print(f"[prepare] note: {name} (required by {', '.join(sorted(set(by)))}) is neither carried "
        "nor in the GPU image list; run's import check shows whether it is needed")
size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(dir_) for f in fs)
tree = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                      capture_output=True, check=True).stdout.split(b"\0")
tree_size = sum(os.path.getsize(p) for p in tree if p and os.path.isfile(p))
total_mib = (size + tree_size) / 2**20
manifest = {"wheels": carried, "carried_bytes": size, "working_tree_bytes": tree_size,
            "total_mib": round(total_mib, 2), "limit_mib": limit_mib,
            "declared_but_not_carried": uncovered}
with open(os.path.join(dir_, "manifest.json"), "w") as f:
  json.dump(manifest, f, indent=1)
print(f"[prepare] {len(carried)} wheels; carried folder {size / 2**20:.1f} MiB + working tree "
      f"{tree_size / 2**20:.1f} MiB = {total_mib:.1f} MiB (limit {limit_mib:.0f} MiB)")
if total_mib > limit_mib:
  sys.exit(f"[prepare] {total_mib:.1f} MiB will not travel (limit {limit_mib:.0f} MiB)")
PY
  echo "[prepare] done: carry '$dir'; there: benchmarks/device_check.sh run"
}

run() {
  local out=${OUT:-$dir/out}
  mkdir -p "$out"
  local log=$out/device_check.log
  exec > >(tee "$log") 2>&1
  [[ -d $wheels && -d $records ]] || {
    echo "device_check.sh run: $wheels or $records is missing; run 'benchmarks/device_check.sh" \
         "prepare' first (here, with network) and carry '$dir'" >&2; exit 1; }
  local started=$SECONDS
  if [[ ${DEVICE_CHECK_INSTALL:-1} == 1 ]]; then
    echo "[run] installing $(ls "$wheels"/*.whl | wc -l) wheels into $site (--no-deps)"
    rm -rf "$site"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --target "$site" "$wheels"/*.whl
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "[run] DEVICE_CHECK_INSTALL=0: using the packages of" \
         "$("$python" -c 'import sys; print(sys.prefix)')"
  fi
  export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
  export TF_CPP_MIN_LOG_LEVEL=2
  command -v nvidia-smi >/dev/null && nvidia-smi > "$out/nvidia_smi.txt" 2>&1 || true

  echo "[run] import check (no TensorFlow)"
  "$python" -c "$no_tf
import importlib.metadata as md, jax, sys
import grain, tensorflow_datasets, ml_collections, clu.parameter_overview
from mer_jax import train, metric_writers, input_pipeline
assert 'tensorflow' not in sys.modules
versions = {}
for name in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'grain', 'array-record',
             'tensorflow-datasets', 'tensorboard', 'torch', 'numpy'):
  try:
    versions[name] = md.version(name)
  except md.PackageNotFoundError:
    versions[name] = None
print('[run] python', sys.version.split()[0], versions)
print('[run] devices', jax.devices())
"

  local device=gpu models=(--model resnet50_lstm:32x16x112 --model small) sizes=() tier=tiny
  local repeats=(--repeats 10 --warmup 3)
  if ((smoke)); then
    device=cpu models=(--model tiny_resnet_lstm) sizes=(--tiny) tier=tiny repeats=()
  fi
  local status=0
  # Two runs, so that one running out of time leaves the other's JSON: the steps (ResNet-50 +
  # LSTM and the small model against the PyTorch peer), then the input pipeline and
  # magnification. Caps: 210 + 100 + 110 s (the LOSO run below) keep the whole within 8 minutes.
  local bench=(-c "$no_tf
import runpy; runpy.run_module('benchmarks.run', run_name='__main__', alter_sys=True)")
  echo "[run] benchmarks: train and inference steps on $device, bfloat16"
  timeout 210 "$python" "${bench[@]}" --suite train,inference --device "$device" \
    --half_precision "${models[@]}" "${sizes[@]}" "${repeats[@]}" \
    --out "$out/steps.json" || status=$?
  echo "[run] benchmarks: input pipeline and magnification on $device"
  timeout 100 "$python" "${bench[@]}" --suite input,magnify --device "$device" \
    --half_precision "${sizes[@]}" "${repeats[@]}" --data_dir "$records" \
    --input_config "$tier" --out "$out/input_magnify.json" || status=$?

  echo "[run] LOSO: configs/default.py:tiny, two folds, on $device"
  local workdir
  workdir=$(mktemp -d /tmp/mer_jax_device_check.XXXXXX)
  timeout 110 "$python" -c "$no_tf
import runpy; runpy.run_module('mer_jax.main', run_name='__main__', alter_sys=True)" \
    --config=configs/default.py:tiny --workdir="$workdir" \
    --config.dataset.data_dir="$records" --config.dataset.build_if_missing=False \
    --config.folds="('s00', 's01')" || status=$?
  [[ -f $workdir/results.json ]] && cp "$workdir/results.json" "$out/loso_results.json"
  echo "[run] done in $((SECONDS - started)) s (exit status $status); files in $out"
  return "$status"
}

"$command"
