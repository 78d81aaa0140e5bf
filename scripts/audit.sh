#!/usr/bin/env bash
# Audit the installed environment (.venv, as it is packed for the executors) for packages with
# known vulnerabilities: pip-audit against PyPI's vulnerability data.
#
#   scripts/audit.sh                  # or: make audit
#   scripts/audit.sh -s osv           # extra pip-audit options, e.g. another vulnerability service
#
# Accepted vulnerabilities are listed, each with its reason, in .pip-audit-allow.txt.
# Exit status: 0 when every installed package was audited and nothing outside the allow-list
# was found; 1 when a vulnerability outside the allow-list was found; 2 when the audit is
# incomplete (the service unreachable, a package it could not look up, an allow-list entry
# without a reason).  An audit that could not see a package never passes.  The project itself
# (the editable sales_st) is not on PyPI and is not audited.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

report=$(mktemp)
log=$(mktemp)
trap 'rm -f "$report" "$log"' EXIT
rc=0
# The allow-list is applied below rather than with --ignore-vuln, so that the report names
# each accepted vulnerability and each allow-list entry that no longer matches anything.
.venv/bin/pip-audit --local --skip-editable --progress-spinner off --desc off --aliases on \
  --format json --output "$report" "$@" 2>"$log" || rc=$?
# pip-audit's own verdict ("No known vulnerabilities found" even when it could look up no
# package) gives way to the one below; its errors and warnings are kept.
grep -vE '^(No known vulnerabilities found|Found [0-9]+ known vulnerabilit)' "$log" >&2 || true

.venv/bin/python - "$report" "$rc" .pip-audit-allow.txt <<'PY'
import json
import sys

report, rc, allow_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
PROJECT = {"sales-st", "sales_st"}  # the editable project: not on PyPI

allow: dict[str, str] = {}
bad = []
with open(allow_file) as fh:
    for n, line in enumerate(fh, 1):
        entry, _, reason = line.partition("#")
        if not entry.strip():
            continue
        if len(entry.split()) != 1 or not reason.strip():
            bad.append(f"{allow_file}:{n}: one id per line, then '# package: reason; revisit: ...'")
        else:
            allow[entry.strip()] = reason.strip()
if bad:
    print("audit: " + "\naudit: ".join(bad), file=sys.stderr)
    sys.exit(2)

try:
    with open(report) as fh:
        deps = json.load(fh)["dependencies"]
except (OSError, ValueError, KeyError):
    print(f"audit: incomplete: pip-audit stopped (exit {rc}) without a report", file=sys.stderr)
    sys.exit(2)

found, accepted, not_audited = [], [], []
used: set[str] = set()
for dep in deps:
    if "skip_reason" in dep:
        if not (dep["name"] in PROJECT and "editable" in dep["skip_reason"]):
            not_audited.append(f"{dep['name']}: {dep['skip_reason']}")
        continue
    for v in dep["vulns"]:
        ids = [v["id"], *v.get("aliases", [])]
        fixed = ", ".join(v["fix_versions"]) or "no fixed version"
        line = f"{dep['name']} {dep['version']}: {' / '.join(ids)} (fixed in: {fixed})"
        hit = [i for i in ids if i in allow]
        if hit:
            used.update(hit)
            accepted.append(f"{line}\n      allowed: {allow[hit[0]]}")
        else:
            found.append(line)

audited = sum(1 for d in deps if "skip_reason" not in d)
for line in accepted:
    print(f"  accepted   {line}")
for line in found:
    print(f"  VULNERABLE {line}")
for line in not_audited[:10]:
    print(f"  NOT AUDITED {line}")
if len(not_audited) > 10:
    print(f"  NOT AUDITED ... and {len(not_audited) - 10} more")
if not not_audited:  # an entry can only be called stale after a complete audit
    for vid in sorted(set(allow) - used):
        print(f"  note: allow-list entry {vid} matched nothing: remove it from {allow_file}")
print(
    f"audit: {audited} packages audited, {len(found)} vulnerabilities, "
    f"{len(accepted)} allow-listed, {len(not_audited)} not audited"
)
if found:
    print("audit: FAILED: upgrade the packages above, or accept each id in "
          f"{allow_file} with its reason", file=sys.stderr)
    sys.exit(1)
if not_audited or not audited:
    print("audit: INCOMPLETE: the packages above could not be checked", file=sys.stderr)
    sys.exit(2)
print("audit: passed")
PY
