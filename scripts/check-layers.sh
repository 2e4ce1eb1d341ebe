#!/usr/bin/env bash
# The layering rules of ARCHITECTURE.md ("Crates and layers"), checked.
#
# 1. Crates: every workspace crate's dependencies on other workspace crates (normal,
#    build and dev) come from `cargo metadata` and must be in the crate's allow-list
#    below. A crate missing from the list fails too, so a new crate gets a rule.
# 2. Modules of xcore-engine (not cut into crates yet): a module must not name
#    (`crate::x`, outside comments) the modules it sits below.
#
# Exit 1 with one line per broken rule; `make lint` runs it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# crate -> the workspace crates it may use ("X may use Y, never the reverse").
declare -A ALLOWED=(
  [xcore-plugin-api]=""
  [xcore-security]=""
  [xcore-hooks]=""
  [xcore-manifest]="xcore-hooks xcore-security"
  [xcore-deadline]=""
  [xcore-db]="xcore-deadline"
  [xcore-engine]="xcore-plugin-api xcore-security xcore-hooks xcore-manifest xcore-deadline xcore-db"
  [xcore-api]="xcore-plugin-api xcore-hooks xcore-manifest xcore-db xcore-engine"
  [xcore-tools]=""
  [xcore-host]="xcore-plugin-api xcore-security xcore-hooks xcore-manifest xcore-deadline xcore-db xcore-engine xcore-api xcore-tools"
)
# Plugins and test fixtures see the contract only.
plugin_rule="xcore-plugin-api"

fail=0
edges="$(cargo metadata --format-version 1 --no-deps --offline 2>/dev/null || cargo metadata --format-version 1 --no-deps)"
members="$(jq -r '.packages[].name' <<<"$edges")"
while IFS=$'\t' read -r crate manifest deps; do
  manifest="${manifest#"$ROOT"/}"
  if [[ "$manifest" == plugins/* || "$manifest" == xcore-host/tests/fixtures/plugins/* ]]; then
    allowed="$plugin_rule"
  elif [[ -v "ALLOWED[$crate]" ]]; then
    allowed="${ALLOWED[$crate]}"
  else
    echo "check-layers: crate $crate has no rule in scripts/check-layers.sh (and ARCHITECTURE.md)"
    fail=1
    continue
  fi
  for dep in $deps; do
    grep -qx -- "$dep" <<<"$members" || continue # not a workspace crate
    if ! grep -qw -- "$dep" <<<"$allowed"; then
      echo "check-layers: $crate must not depend on $dep (it may use: ${allowed:-no workspace crate})"
      fail=1
    fi
  done
done < <(jq -r '.packages[] | [.name, .manifest_path, ([.dependencies[].name] | unique | join(" "))] | @tsv' <<<"$edges")

# Modules of xcore-engine: module (path under xcore-host/engine/src) -> modules it must
# not name.
declare -A FORBIDDEN=(
  [runtime]="services config watcher plugin_build"
  [services]="config watcher plugin_build"
  [scheduler]="services config watcher"
  [metrics.rs]="services config watcher"
  [logging.rs]="config runtime services scheduler"
  [lenient.rs]="config"
)
for module in "${!FORBIDDEN[@]}"; do
  path="xcore-host/engine/src/$module"
  if [[ ! -e "$path" ]]; then
    echo "check-layers: $path named by a module rule does not exist"
    fail=1
    continue
  fi
  for other in ${FORBIDDEN[$module]}; do
    # Code lines only: a doc comment may mention a module it does not use.
    hits="$(grep -rnE "crate::$other\b" "$path" | grep -vE '^[^:]+:[0-9]+:\s*//' || true)"
    if [[ -n "$hits" ]]; then
      echo "check-layers: xcore-engine's $module must not use crate::$other:"
      sed 's/^/    /' <<<"$hits"
      fail=1
    fi
  done
done

if [[ $fail -eq 0 ]]; then
  echo "check-layers: ok ($(wc -l <<<"$members") crates, ${#FORBIDDEN[@]} module rules)"
fi
exit $fail
