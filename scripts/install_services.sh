#!/usr/bin/env bash
# Installs the Debian packages the scaled profile (make run-scaled) runs on, when
# missing: PostgreSQL 15 (initdb/pg_ctl, never started as a system service here),
# redis-server and nginx-light. Installs only as root, like scripts/setup.sh installs
# chromium; otherwise it names what is missing and how to install it, and fails.
set -euo pipefail

missing=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "error: the scaled profile needs Debian's ${missing[*]}, and this is not root" >&2
  echo "       (or not Debian), so they were not installed. Install them with:" >&2
  echo "       sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "Installing Debian's ${missing[*]} for the scaled profile..."
export DEBIAN_FRONTEND=noninteractive
# A package's post-install script would start its system service: the profile runs
# its own instances in the state directory, so policy-rc.d keeps the services off.
policy=/usr/sbin/policy-rc.d
own_policy=false
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=true
fi
trap 'if [ "$own_policy" = true ]; then rm -f "$policy"; fi' EXIT
apt-get install -y -qq "${missing[@]}" >/dev/null ||
  { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
