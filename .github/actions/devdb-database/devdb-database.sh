#!/usr/bin/env bash
# The DevDB GitHub Action's step (action.yml): installs the devdb CLI, derives the database name
# from the pull request or branch, and creates, resets or deletes the database. It reads what
# the runner sets (GITHUB_ENV, GITHUB_OUTPUT, GITHUB_PATH, GITHUB_EVENT_NAME, GITHUB_REF,
# GITHUB_HEAD_REF, GITHUB_REF_NAME, RUNNER_TEMP) and the action's inputs as INPUT_*; it runs the
# same outside GitHub with those set (Tests/ControlPlaneTests/CIDatabaseTests.swift does).
# The token and the password never reach the log: both are masked first.
set -euo pipefail

fail() { echo "::error title=DevDB::$*"; exit 1; }
[ -n "${DEVDB_SERVER:-}" ] || fail "the server input is empty: give the DevDB API address"
[ -n "${DEVDB_TOKEN:-}" ] || fail "the token input is empty: pass a DevDB API token from a secret"
[ -n "${GITHUB_OUTPUT:-}" ] && [ -n "${GITHUB_ENV:-}" ] || fail "GITHUB_OUTPUT and GITHUB_ENV are not set: this runs as a GitHub Actions step"
echo "::add-mask::$DEVDB_TOKEN"
export DEVDB_SERVER DEVDB_TOKEN

command=${INPUT_COMMAND:-create}
case "$command" in create|reset|delete) ;; *) fail "unknown command \"$command\": use create, reset or delete" ;; esac

# The CLI: a release download, devdb on PATH, or built from this action's repository.
bin="${RUNNER_TEMP:-${TMPDIR:-/tmp}}/devdb-cli"
devdb=""
if [ -n "${INPUT_CLI_URL:-}" ]; then
    mkdir -p "$bin"
    curl -fsSL --retry 3 -o "$bin/download" "$INPUT_CLI_URL" || fail "cannot download the devdb CLI from $INPUT_CLI_URL"
    if [ -n "${INPUT_CLI_SHA256:-}" ]; then
        echo "$INPUT_CLI_SHA256  $bin/download" | sha256sum -c --quiet - || fail "the download from $INPUT_CLI_URL does not have the SHA-256 in cli-sha256"
    fi
    if gzip -t "$bin/download" 2>/dev/null; then
        tar -xzf "$bin/download" -C "$bin"
        found=$(find "$bin" -type f -name devdb | head -1)
        [ -n "$found" ] || fail "$INPUT_CLI_URL has no file named devdb"
        mv "$found" "$bin/devdb.new" && mv "$bin/devdb.new" "$bin/devdb"
        rm -f "$bin/download"
    else
        mv "$bin/download" "$bin/devdb"
    fi
    chmod +x "$bin/devdb"
    devdb="$bin/devdb"
elif command -v devdb >/dev/null; then
    devdb=$(command -v devdb)
else
    root=$(cd "$(dirname "$0")/../../.." && pwd)
    [ -f "$root/Package.swift" ] || fail "no cli-url, no devdb on PATH, and no DevDB sources next to the action to build it"
    command -v swift >/dev/null || fail "no cli-url and no devdb on PATH: building it needs swift (or give cli-url)"
    echo "building the devdb CLI with swift (give cli-url to download a release instead)"
    swift build -c release --product devdb --package-path "$root" >&2
    mkdir -p "$bin" && cp "$root/.build/release/devdb" "$bin/devdb"
    devdb="$bin/devdb"
fi
[ -n "${GITHUB_PATH:-}" ] && [ "$devdb" = "$bin/devdb" ] && echo "$bin" >> "$GITHUB_PATH"
"$devdb" --version >/dev/null || fail "$devdb does not run"

# The name: given, or from the pull request number (the same on open, push and close), or the branch.
name=${INPUT_NAME:-}
if [ -z "$name" ]; then
    case "${GITHUB_EVENT_NAME:-}:${GITHUB_REF:-}" in
        pull_request*:refs/pull/*) source=$GITHUB_REF ;;
        *) source=${GITHUB_HEAD_REF:-${GITHUB_REF_NAME:-}} ;;
    esac
    [ -n "$source" ] || fail "no name input, and neither GITHUB_REF (a pull request) nor GITHUB_HEAD_REF/GITHUB_REF_NAME is set to derive one"
    name=$("$devdb" name-for "$source" --prefix "${INPUT_PREFIX:-${INPUT_PROJECT:-}}")
fi
echo "name=$name" >> "$GITHUB_OUTPUT"

case "$command" in
    delete)
        "$devdb" db delete "$name" --if-exists --yes --wait --timeout 10m
        ;;
    create|reset)
        [ -n "${INPUT_PROJECT:-}" ] || fail "the project input is empty: say which DevDB project to copy"
        flag=--if-not-exists
        [ "$command" = reset ] && flag=--reset-if-exists
        # -o github masks the password, then writes DATABASE_URL and PG* to GITHUB_ENV and the outputs.
        "$devdb" db create "$name" --project "$INPUT_PROJECT" "$flag" --ttl "${INPUT_TTL:-3d}" --wait --timeout 30m -o github
        ;;
esac
