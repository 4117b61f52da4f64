#!/usr/bin/env bash
# Assembles a runnable Azure Functions app folder: host.json, one folder per function (the host
# looks only one level down), and the handler binary with its execute bit. This is the folder
# `func host start` runs and the content of the zip that a zip deploy ships. It never holds
# local.settings.json or anything else: a deploy package carries no local settings or secrets
# (scripts/run-local.sh adds local.settings.json to its own run folder).
#
#   scripts/assemble.sh [--debug|--release] [--musl] [--zip] [--binary PATH] [--functions DIR]... [OUT_DIR]
#
#   --release (default) optimised build; --debug for fast local iteration
#   --musl    static x86_64-unknown-linux-musl build for the Functions Linux image
#             (installs the target and musl-gcc when missing)
#   --zip     also writes OUT_DIR.zip, ready for a zip deploy: exactly host.json, handler
#             (stored with mode 0755) and */function.json
#   --binary  package this already-built handler instead of building one (tests use it to run
#             everything else this script does without a nested cargo build)
#   --functions DIR  (repeatable) an app of your own domain: package the library's function
#             folders (listed in src/functions/library-functions.txt) and every folder of DIR
#             that holds a function.json, instead of all of functions/ (the bank's app). Give
#             your handler with --binary (docs/your-own-domain.md, "Deploying"). Paths are
#             relative to the repository root, as OUT_DIR and --binary are
#   OUT_DIR   default: dist/app
#
# Production package (README, "Deploy to Azure"):
#   scripts/assemble.sh --release --musl --zip dist/app
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
musl=0
zip=0
binary=
out=dist/app
domain_dirs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) profile=debug ;;
    --release) profile=release ;;
    --musl) musl=1 ;;
    --zip) zip=1 ;;
    --binary) shift; binary=${1:?--binary needs a path} ;;
    --functions) shift; domain_dirs+=("${1:?--functions needs a folder}") ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) out=$1 ;;
  esac
  shift
done

if [ -z "$binary" ]; then
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
  if [ "$musl" = 1 ] && readelf -l "$binary" | grep -q 'program interpreter'; then
    echo "$binary is not static (it names a program interpreter)" >&2
    exit 1
  fi
fi
[ -f "$binary" ] || { echo "no handler binary at $binary" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out"
install -m 0644 host.json "$out/host.json"
# The function folders: all of functions/ (the library's and the bank's), or, for an app of
# another domain, the library's listed ones and the domain's own.
folders=()
if [ "${#domain_dirs[@]}" -eq 0 ]; then
  folders=(functions/*/)
else
  while read -r name; do
    case "$name" in ''|'#'*) continue ;; esac
    [ -f "functions/$name/function.json" ] || { echo "functions/$name/function.json is missing" >&2; exit 1; }
    folders+=("functions/$name/")
  done < src/functions/library-functions.txt
  for dir in "${domain_dirs[@]}"; do
    [ -d "$dir" ] || { echo "no function folder $dir" >&2; exit 1; }
    folders+=("$dir"/*/)
  done
fi
for fn in "${folders[@]}"; do
  name=$(basename "$fn")
  [ -f "$fn/function.json" ] || continue
  if [ -e "$out/$name" ]; then
    echo "two function folders are named $name ($fn and an earlier one)" >&2
    exit 1
  fi
  mkdir -p "$out/$name"
  install -m 0644 "$fn/function.json" "$out/$name/function.json"
done
install -m 0755 "$binary" "$out/handler"
echo "assembled $out ($(du -h "$out/handler" | cut -f1) handler, $(ls -d "$out"/*/ | wc -l) functions)"

if [ "$zip" = 1 ]; then
  rm -f "$out.zip"
  python3 - "$out" <<'PY'
import os, sys, zipfile

root = sys.argv[1]
# Exactly what the host needs, whatever else may lie in the folder: host.json, the handler,
# and one function.json per function folder (the host looks only one level down).
entries = [("host.json", 0o644), ("handler", 0o755)]
for name in sorted(os.listdir(root)):
    if os.path.isfile(os.path.join(root, name, "function.json")):
        entries.append((name + "/function.json", 0o644))
with zipfile.ZipFile(root + ".zip", "w", zipfile.ZIP_DEFLATED) as z:
    for name, mode in entries:
        # A fixed time makes the zip depend on its content only.
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        # Made on Unix, with the Unix mode of a regular file: a Linux Function App runs the
        # handler from the package with this mode, so it must say executable.
        info.create_system = 3
        info.external_attr = (0o100000 | mode) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(os.path.join(root, name), "rb") as src:
            z.writestr(info, src.read())
print("wrote %s.zip (%d entries)" % (root, len(entries)))
PY
fi
