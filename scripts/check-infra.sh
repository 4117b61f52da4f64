#!/usr/bin/env bash
# Offline checks of the infrastructure as code (infra/*.bicep): no Bicep CLI and no Azure here,
# so every file is parsed with pycep-parser and main.bicep's content is asserted
# (infra/tests/test_bicep.py: plan, runtime, no key anywhere, each role assignment, the
# Projector's subscription), then checkov scans the files; each finding it would report is
# fixed or skipped in the file with its reason (`//checkov:skip=ID:reason`). Installs the pinned
# tools (infra/requirements.txt) into .venv-infra on first use. Run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-infra
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
  python3 -m venv "$venv"
fi
if ! cmp -s infra/requirements.txt "$venv/.installed" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r infra/requirements.txt
  cp infra/requirements.txt "$venv/.installed"
fi

echo "== Bicep: parse every file, assert what the app needs"
"$venv/bin/python" -m unittest discover -s infra/tests -v

echo "== Bicep: checkov (offline: no download, no upload, no version check; a parse error fails)"
CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE CKV_PARSE_ERROR_FAIL=true \
  "$venv/bin/checkov" --directory infra --framework bicep --skip-download --compact --quiet
