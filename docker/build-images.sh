#!/usr/bin/env bash
# `make images`: the project's image, built with podman and no registry image. Prints the image reference last.
#  1. The pinned wheels, downloaded here (the pip cache makes that quick), for a build that reaches no index
#     (`--wheels-only`: only this, for a build on a Docker host: `make wheels`).
#  2. A minimal Debian base made with debootstrap and imported (kept: rebuilt only when missing or FRESH_BASE=1).
#  3. docker/Dockerfile on that base, tagged <version>-<commit> and latest, with the commit recorded in the image.
# Needs root (debootstrap, rootful podman) and podman, runc and debootstrap (`make images` installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

export CONTAINERS_CONF="$PWD/docker/podman/containers.conf"
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=${BASE_IMAGE:-localhost/markdown-pricing-base:$SUITE}
IMAGE=${IMAGE_NAME:-localhost/markdown-pricing}
PYTHON=${PYTHON:-.venv/bin/python}
WORK=.images

say() { echo "make images: $*" >&2; }

say "pinned wheels into $WORK/wheels"
# Wheels of every pin (sdists built here), so the image's pip needs neither an index nor a compiler.
"$PYTHON" -m pip wheel --quiet --wheel-dir "$WORK/wheels" $("$PYTHON" -c 'import ast, pathlib
for node in ast.walk(ast.parse(pathlib.Path("setup.py").read_text())):
    if isinstance(node, ast.keyword) and node.arg == "install_requires":
        print(" ".join(ast.literal_eval(node.value)))')

if [ "${1:-}" = --wheels-only ]; then
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  say "needs root: debootstrap and rootful podman (run it as root, or build on a Docker host: README \"Images\")"
  exit 1
fi

if [ "${FRESH_BASE:-0}" = 1 ] || ! podman image exists "$BASE"; then
  say "debootstrap $SUITE from $MIRROR into $BASE"
  rootfs="$WORK/rootfs"
  rm -rf "$rootfs"
  mkdir -p "$WORK"
  debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s-security %s-security main\n' \
    "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" > "$rootfs/etc/apt/sources.list"
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  : > "$rootfs/etc/resolv.conf"
  : > "$rootfs/etc/hostname"
  tar --numeric-owner --xattrs -C "$rootfs" -cf - . \
    | podman import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$BASE" > /dev/null
  rm -rf "$rootfs"
fi

version=$(cat lib/markdown_pricing/VERSION)
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
tag="$version-${commit:0:12}"
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  # Uncommitted changes are in the image: the tag says so, and so does the commit it records.
  tag="$tag-dirty"
  commit="$commit-dirty"
fi
say "building $IMAGE:$tag on $BASE"
podman build --network host --target runtime \
  --build-arg BASE_IMAGE="$BASE" --build-arg GIT_COMMIT="$commit" --build-arg VERSION="$version" \
  --tag "$IMAGE:$tag" --tag "$IMAGE:latest" --file docker/Dockerfile . >&2
# Only this project's images that a rebuild left without a tag: nothing else in the machine's store.
podman image prune --force --filter label=org.opencontainers.image.title=markdown-pricing > /dev/null
echo "$IMAGE:$tag"
