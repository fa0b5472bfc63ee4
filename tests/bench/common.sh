# Sourced by every benchmark script with its arguments: checks the one argument (the dconn
# binary), makes its path absolute and moves to the repository root. Sets DCONN and ROOT.
# shellcheck shell=bash
set -u
export LC_ALL=C
if [ $# -ne 1 ] || [ ! -x "$1" ]; then
  echo "usage: $0 path/to/dconn" >&2
  exit 2
fi
DCONN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
export DCONN ROOT
