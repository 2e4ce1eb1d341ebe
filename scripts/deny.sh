#!/usr/bin/env bash
# `cargo deny check` against deny.toml: advisories (RustSec), licenses, duplicate
# versions, sources. `make lint` runs it.
#
# cargo-deny fetches the RustSec advisory database from GitHub. Where github.com cannot be
# reached, XCORE_ADVISORY_DB may name a git repository of that database (a mirror): it is
# cloned into cargo-deny's cache and the whole check runs offline. With neither, the
# other checks run and the script says loudly that advisories were not checked.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DENY_VERSION=0.20.2

command -v cargo-deny >/dev/null \
  || { echo "deny: cargo-deny is missing: cargo install cargo-deny@$DENY_VERSION --locked" >&2; exit 1; }

# cargo-deny's cache folder for https://github.com/RustSec/advisory-db (named by a hash of
# the URL, as cargo-deny $DENY_VERSION names it).
db="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-3157b0e258782691"

if [[ -n "${XCORE_ADVISORY_DB:-}" ]]; then
  rm -rf "$db"
  git clone -q "$XCORE_ADVISORY_DB" "$db"
  echo "deny: advisory database from $XCORE_ADVISORY_DB (last change $(git -C "$db" log -1 --format=%cs))"
  exec cargo deny --offline check
fi
if timeout 20 git ls-remote -q https://github.com/RustSec/advisory-db HEAD >/dev/null 2>&1; then
  exec cargo deny check
fi
echo "deny: ADVISORIES NOT CHECKED: github.com cannot be reached and XCORE_ADVISORY_DB is not set" >&2
exec cargo deny --offline check bans licenses sources
