#!/usr/bin/env bash
# The main job on the embedded default: install, bring the local platform up
# (API, MLflow, two Ray clusters), run the example experiments, show results.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# no extras; an explicit "" so env.sh does not take this script's own arguments (--timeout) as extras
source "$ROOT/scripts/env.sh" ""
cd "$ROOT"
exec aitb demo "$@"
