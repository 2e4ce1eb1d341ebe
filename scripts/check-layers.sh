#!/usr/bin/env bash
# The layering rules of ARCHITECTURE.md ("Crates and layers"), checked.
#
# 1. Crates: every workspace crate's dependencies on other workspace crates (normal,
#    build and dev) come from `cargo metadata` and must be in the crate's allow-list
#    below. A crate missing from the list fails too, so a new crate gets a rule.
# 2. Names no crate may use although its dependencies would allow them (for example the
#    services reach plugins through the PluginCalls trait, never the registry itself).
#
# Exit 1 with one line per broken rule; `make lint` runs it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# crate -> the workspace crates it may use ("X may use Y, never the reverse").
declare -A ALLOWED=(
  [xcore-plugin-api]=""
  [xcore-plugin-macros]=""
  [xcore-plugin-sdk]="xcore-plugin-api xcore-plugin-macros"
  # The test kit is the host's own services behind a fake host object: it sits above them.
  [xcore-plugin-testkit]="xcore-plugin-api xcore-plugin-sdk xcore-hooks xcore-manifest xcore-deadline xcore-db xcore-runtime xcore-services"
  [xcore-security]=""
  [xcore-hooks]=""
  [xcore-manifest]="xcore-hooks xcore-security"
  [xcore-deadline]=""
  [xcore-db]="xcore-deadline"
  [xcore-runtime]="xcore-plugin-api xcore-security xcore-hooks xcore-manifest xcore-deadline"
  [xcore-services]="xcore-plugin-api xcore-hooks xcore-manifest xcore-db xcore-runtime"
  [xcore-reload]="xcore-security xcore-manifest xcore-db xcore-runtime"
  [xcore-config]="xcore-security xcore-manifest xcore-db xcore-runtime xcore-services"
  [xcore-api]="xcore-plugin-api xcore-hooks xcore-manifest xcore-db xcore-runtime xcore-services"
  [xcore-tools]="xcore-plugin-api"
  [xcore-host]="xcore-plugin-api xcore-security xcore-hooks xcore-manifest xcore-deadline xcore-db xcore-runtime xcore-services xcore-reload xcore-config xcore-api xcore-tools xcore-plugin-testkit"
)
# Plugins see the SDK only (and, in their tests only, the test kit: a dev-dependency);
# test fixtures may also take the ABI crate in hand (to forge a root module, to panic past
# the SDK's guard).
plugin_rule="xcore-plugin-sdk"
plugin_dev_rule="xcore-plugin-sdk xcore-plugin-testkit"
fixture_rule="xcore-plugin-sdk xcore-plugin-api"
# abi_stable stays behind the ABI crate (so that it could be replaced): only these may
# name it directly.
abi_stable_users="xcore-plugin-api xcore-fixture-legacy-abi xcore-fixture-abi-layout-mismatch xcore-fixture-api-version-mismatch xcore-fixture-unguarded-panic"

fail=0
edges="$(cargo metadata --format-version 1 --no-deps --offline 2>/dev/null || cargo metadata --format-version 1 --no-deps)"
members="$(jq -r '.packages[].name' <<<"$edges")"
while IFS=$'\t' read -r crate manifest deps build_deps dev_deps; do
  manifest="${manifest#"$ROOT"/}"
  if [[ "$manifest" == plugins/* ]]; then
    allowed="$plugin_rule"
    # Its library (normal and build dependencies) against the plugin rule, what only its
    # tests use against the dev rule.
    deps="$build_deps"
    for dep in $dev_deps; do
      grep -qx -- "$dep" <<<"$members" || continue
      if ! grep -qw -- "$dep" <<<"$plugin_dev_rule"; then
        echo "check-layers: $crate must not depend on $dep in its tests (they may use: $plugin_dev_rule)"
        fail=1
      fi
    done
  elif [[ "$manifest" == xcore-host/tests/fixtures/plugins/* ]]; then
    allowed="$fixture_rule"
  elif [[ -v "ALLOWED[$crate]" ]]; then
    allowed="${ALLOWED[$crate]}"
  else
    echo "check-layers: crate $crate has no rule in scripts/check-layers.sh (and ARCHITECTURE.md)"
    fail=1
    continue
  fi
  for dep in $deps; do
    if [[ "$dep" == abi_stable ]] && ! grep -qw -- "$crate" <<<"$abi_stable_users"; then
      echo "check-layers: $crate must not depend on abi_stable directly (it is the ABI crate's: use xcore-plugin-sdk)"
      fail=1
    fi
    grep -qx -- "$dep" <<<"$members" || continue # not a workspace crate
    if ! grep -qw -- "$dep" <<<"$allowed"; then
      echo "check-layers: $crate must not depend on $dep (it may use: ${allowed:-no workspace crate})"
      fail=1
    fi
  done
done < <(jq -r '.packages[] | [.name, .manifest_path,
    ([.dependencies[].name] | unique | join(" ")),
    ([.dependencies[] | select(.kind != "dev") | .name] | unique | join(" ")),
    ([.dependencies[] | select(.kind == "dev") | .name] | unique | join(" "))]
    | map(if . == "" then "-" else . end) | @tsv' <<<"$edges")

# Crate (its folder) -> identifiers its code must not use (outside comments).
declare -A FORBIDDEN=(
  # Services reach plugins through PluginCalls; only the composition root and the API
  # hold the registry.
  [xcore-host/services]="PluginRegistry"
)
for folder in "${!FORBIDDEN[@]}"; do
  if [[ ! -d "$folder" ]]; then
    echo "check-layers: $folder named by a rule does not exist"
    fail=1
    continue
  fi
  for name in ${FORBIDDEN[$folder]}; do
    # Code lines only: a doc comment may mention what it does not use.
    hits="$(grep -rnE "\b$name\b" "$folder" --include=*.rs | grep -vE '^[^:]+:[0-9]+:\s*//' || true)"
    if [[ -n "$hits" ]]; then
      echo "check-layers: $folder must not use $name:"
      sed 's/^/    /' <<<"$hits"
      fail=1
    fi
  done
done

if [[ $fail -eq 0 ]]; then
  echo "check-layers: ok ($(wc -l <<<"$members") crates, ${#FORBIDDEN[@]} name rules)"
fi
exit $fail
