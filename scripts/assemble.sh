#!/usr/bin/env bash
# Assembles a runnable Azure Functions app folder: host.json, one folder per function (the host
# looks only one level down), and the handler binary with its execute bit. This is the folder
# `func host start` runs and the content of the zip that a zip deploy ships.
#
#   scripts/assemble.sh [--debug|--release] [--musl] [--zip] [OUT_DIR]
#
#   --release (default) optimised build; --debug for fast local iteration
#   --musl    static x86_64-unknown-linux-musl build for the Functions Linux image
#             (installs the target and musl-gcc when missing)
#   --zip     also writes OUT_DIR.zip, ready for `az functionapp deployment source config-zip`
#   OUT_DIR   default: dist/app
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
musl=0
zip=0
out=dist/app
for arg in "$@"; do
  case "$arg" in
    --debug) profile=debug ;;
    --release) profile=release ;;
    --musl) musl=1 ;;
    --zip) zip=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "unknown option $arg" >&2; exit 2 ;;
    *) out=$arg ;;
  esac
done

cargo_args=(build --bin handler)
[ "$profile" = release ] && cargo_args+=(--release)
target_dir=target
if [ "$musl" = 1 ]; then
  target=x86_64-unknown-linux-musl
  rustup target list --installed | grep -qx "$target" || rustup target add "$target"
  if ! command -v musl-gcc >/dev/null; then
    echo "installing musl-tools (ring, the TLS crate, compiles C code)" >&2
    apt-get update -qq && apt-get install -y -qq musl-tools >/dev/null
  fi
  cargo_args+=(--target "$target")
  target_dir=target/$target
fi
cargo "${cargo_args[@]}"

binary=$target_dir/$profile/handler
rm -rf "$out"
mkdir -p "$out"
cp host.json "$out/"
for fn in functions/*/; do
  name=$(basename "$fn")
  [ -f "$fn/function.json" ] || continue
  mkdir -p "$out/$name"
  cp "$fn/function.json" "$out/$name/"
done
[ -f local.settings.json ] && cp local.settings.json "$out/"
install -m 0755 "$binary" "$out/handler"
echo "assembled $out ($(du -h "$out/handler" | cut -f1) handler, $(ls -d "$out"/*/ | wc -l) functions)"

if [ "$zip" = 1 ]; then
  rm -f "$out.zip"
  python3 - "$out" <<'PY'
import os, sys, zipfile
root = sys.argv[1]
with zipfile.ZipFile(root + ".zip", "w", zipfile.ZIP_DEFLATED) as z:
    for dirpath, _, files in os.walk(root):
        for f in sorted(files):
            path = os.path.join(dirpath, f)
            info = zipfile.ZipInfo.from_file(path, os.path.relpath(path, root))
            # keep the execute bit of the handler inside the zip (unix permissions)
            info.external_attr = (os.stat(path).st_mode & 0xFFFF) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as src:
                z.writestr(info, src.read())
print("wrote " + root + ".zip")
PY
fi
