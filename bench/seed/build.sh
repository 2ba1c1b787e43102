#!/usr/bin/env bash
# Builds the seed article's function as two Lambda container images, train and predict, into
# OUT/train and OUT/predict (OCI image layouts, as `deploy image` writes lambda-cnn's, so that
# `deploy push --images OUT` takes them), without pulling any image:
#   1. a Debian root file system (debootstrap --variant=minbase, with python3): the base image;
#   2. PyPI's packages in /opt/python: SEED_PINS (tensorflow-cpu and AWS's runtime interface
#      client, awslambdaric), installed and byte-compiled as `pip install` in a Dockerfile would;
#   3. the function: its handler in /var/task, /var/runtime/bootstrap starting awslambdaric on
#      it, and its data: MNIST's four files (train, as lambda-cnn's train image has them) or the
#      model the train handler saved from the seed's 5-epoch run (predict).
# Each step is cached in SEED_CACHE under a key of everything it is
# made of (the pins, this script, the handlers, MNIST's checksums), so a rebuild only repacks.
# Needs root (debootstrap, chroot-free file ownership), Debian's debootstrap and umoci, and a
# CPython 3.11 to install the wheels with (the base's python3 is 3.11: the same wheels).
# Usage: build.sh OUT  (env: MNIST_DIR, SEED_PINS, SEED_CACHE, SEED_SUITE, SEED_MIRROR)
set -euo pipefail
OUT=${1:?usage: build.sh OUT}
HERE=$(cd "$(dirname "$0")" && pwd)
: "${MNIST_DIR:?set MNIST_DIR to the folder of the four MNIST .gz files}"
: "${SEED_PINS:?set SEED_PINS, e.g. tensorflow-cpu==2.21.0 awslambdaric==4.2.2}"
SUITE=${SEED_SUITE:-bookworm}
MIRROR=${SEED_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-python3}
say() { echo "seed image: $*" >&2; }

[ "$(id -u)" = 0 ] || { say "needs root (debootstrap makes a root file system); run as root"; exit 2; }
for tool in debootstrap umoci; do
  command -v $tool >/dev/null || { say "needs $tool: apt-get install debootstrap umoci"; exit 2; }
done
[ "$(uname -m)" = x86_64 ] || { say "builds x86_64 images only (this machine is $(uname -m))"; exit 2; }
MNIST_FILES="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
for f in $MNIST_FILES; do
  [ -f "$MNIST_DIR/$f" ] || { say "no $MNIST_DIR/$f (make data downloads MNIST)"; exit 2; }
done

# Each step's output is cached under a key of what it is made of, so that changing a handler
# repacks the images without rebuilding the base or reinstalling TensorFlow.
key() { sha256sum | cut -c1-16; }
CACHE=${SEED_CACHE:-$HOME/.cache/lambda-cnn/seed}
BASE_ARGS="--variant=minbase --include=python3"
ROOTFS=$CACHE/rootfs-$(echo "$SUITE $MIRROR $BASE_ARGS" | key)
mkdir -p "$CACHE"

if [ ! -f "$ROOTFS.done" ]; then
  say "1/4 Debian $SUITE (minbase, python3) from $MIRROR"
  rm -rf "$ROOTFS"
  # shellcheck disable=SC2086
  debootstrap $BASE_ARGS "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 \
    || { say "debootstrap failed; its log: $ROOTFS.log"; tail -5 "$ROOTFS.log" >&2; exit 1; }
  # What a container brings itself (device nodes, mounts) and caches no image keeps.
  rm -rf "$ROOTFS"/dev/* "$ROOTFS"/proc/* "$ROOTFS"/sys/* \
    "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/*
  touch "$ROOTFS.done"
fi

# The wheels are the base's: its Python version and its glibc (pip picks manylinux wheels up to
# that glibc), every package pinned by constraints.txt. PYTHON (the installer) must be the same
# Python version, so that the byte-code pip compiles is the one the image's python3 loads.
PY_VERSION=$(basename "$(ls -d "$ROOTFS"/usr/lib/python3.[0-9]* | sed -n 1p)" | sed 's/^python//')
GLIBC=$("$ROOTFS"/usr/bin/ldd --version 2>/dev/null | sed -n 1p | grep -o '[0-9]*\.[0-9]*$')
[ -n "$PY_VERSION" ] && [ -n "$GLIBC" ] || { say "cannot read the base's Python and glibc versions in $ROOTFS"; exit 1; }
"$PYTHON" -c "import sys; sys.exit(f'{sys.version_info[0]}.{sys.version_info[1]}' != '$PY_VERSION')" \
  || { say "PYTHON ($PYTHON) must be CPython $PY_VERSION, the base's (pip byte-compiles with it)"; exit 2; }
PLATFORMS=""
for minor in $(seq 17 "${GLIBC#2.}"); do PLATFORMS="$PLATFORMS --platform manylinux_2_${minor}_x86_64"; done
PIP_ARGS="--quiet --disable-pip-version-check --root-user-action=ignore --only-binary=:all: \
  --implementation cp --python-version $PY_VERSION $PLATFORMS --platform manylinux2014_x86_64"
# Keyed by the constraints' contents, not their path: a clone elsewhere (CI's) reuses the step.
SITE=$CACHE/python-$( { echo "$SEED_PINS $PIP_ARGS"; cat "$HERE/constraints.txt"; } | key)
PIP_ARGS="$PIP_ARGS -c $HERE/constraints.txt"
MODEL=$CACHE/model-$( { echo "$SITE"; cat "$HERE/train.py"; (cd "$MNIST_DIR" && sha256sum $MNIST_FILES); } | key)
IMAGES=$CACHE/images-$( { echo "$ROOTFS $SITE $MODEL"; cat "$0" "$HERE"/*.py; } | key)

if [ ! -f "$SITE.done" ]; then
  say "2/4 pip install $SEED_PINS into /opt/python (Python $PY_VERSION, glibc $GLIBC: the base's)"
  rm -rf "$SITE"
  # shellcheck disable=SC2086
  "$PYTHON" -m pip install $PIP_ARGS --target "$SITE/opt/python" $SEED_PINS
  touch "$SITE.done"
fi

if [ ! -f "$MODEL.done" ]; then
  say "3/4 the seed's training run (5 epochs), for the model predict serves"
  mkdir -p "$MODEL"
  SEED_MODEL_OUT="$MODEL/seed.keras" MNIST_DIR="$MNIST_DIR" PYTHONPATH="$SITE/opt/python" \
    TF_CPP_MIN_LOG_LEVEL=2 "$PYTHON" "$HERE/train.py" >"$MODEL/train.log" 2>&1 \
    || { say "training failed; its log: $MODEL/train.log"; tail -5 "$MODEL/train.log" >&2; exit 1; }
  tail -1 "$MODEL/train.log" >&2
  touch "$MODEL.done"
fi

if [ -f "$IMAGES.done" ]; then
  say "4/4 the images: unchanged, from $IMAGES"
else
  say "4/4 the images"
  # umoci's layer tars keep the files' owners and modes: the function runs as another user, so
  # everything it reads must be world-readable.
  chmod -R a+rX "$SITE" "$ROOTFS/usr"
  for fn in train predict; do
    app=$(mktemp -d)
    mkdir -p "$app/var/task" "$app/var/runtime"
    cp "$HERE/$fn.py" "$app/var/task/"
    cat >"$app/var/runtime/bootstrap" <<BOOT
#!/bin/sh
# The custom runtime: AWS's runtime interface client running the handler.
exec /usr/bin/python3 -m awslambdaric $fn.lambda_handler
BOOT
    chmod 755 "$app/var/runtime/bootstrap"
    if [ $fn = train ]; then
      mkdir -p "$app/var/task/mnist"
      for f in $MNIST_FILES; do cp "$MNIST_DIR/$f" "$app/var/task/mnist/"; done
    else
      cp "$MODEL/seed.keras" "$app/var/task/seed.keras"
    fi
    chmod -R a+rX "$app"
    dir="$IMAGES/$fn"
    rm -rf "$dir"
    mkdir -p "$IMAGES"
    umoci init --layout "$dir"
    umoci new --image "$dir:latest"
    umoci insert --image "$dir:latest" --history.comment "Debian $SUITE minbase, python3" "$ROOTFS" /
    umoci insert --image "$dir:latest" --history.comment "pip install $SEED_PINS" "$SITE" /
    umoci insert --image "$dir:latest" --history.comment "the seed's $fn handler and its data" "$app" /
    umoci config --image "$dir:latest" --os linux --architecture amd64 \
      --config.entrypoint /var/runtime/bootstrap --config.workingdir /var/task \
      --config.env PATH=/usr/local/bin:/usr/bin:/bin --config.env PYTHONPATH=/opt/python \
      --config.env PYTHONDONTWRITEBYTECODE=1 --config.env KERAS_HOME=/tmp/.keras \
      --config.env TF_CPP_MIN_LOG_LEVEL=2 --config.label "lambda-cnn.seed=$fn"
    umoci gc --layout "$dir"
    rm -rf "$app"
    say "$fn: $(du -sm "$dir" | cut -f1) MB compressed"
  done
  touch "$IMAGES.done"
fi
mkdir -p "$OUT"
for fn in train predict; do
  rm -rf "${OUT:?}/$fn"
  # Hard links where OUT is on the cache's file system: the blobs are hundreds of MB.
  cp -al "$IMAGES/$fn" "$OUT/$fn" 2>/dev/null || { rm -rf "${OUT:?}/$fn"; cp -a "$IMAGES/$fn" "$OUT/$fn"; }
done
say "train and predict in $OUT"
