#!/usr/bin/env bash
# Mutation testing of the core (runner, script, render, skel, spec, ipam/store, plugins/common) with mutmut,
# against the unit and golden tests ([tool.mutmut] in pyproject.toml). On demand, not in CI: ~2700 mutants,
# measured 53 min with JOBS=1 on a busy 2-core machine; runner + script alone (~610) 3.5 min with JOBS=2.
# Arguments go to `mutmut run`, e.g. a subset: contrib/mutation.sh 'cniplug.runner*' 'cniplug.script*'
# JOBS=N sets the parallel children (default 2). Prints the score; `.venv/bin/mutmut results` lists survivors.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -c 'import mutmut' 2>/dev/null || .venv/bin/python -m pip install -q -e '.[test,mutation]'
rm -rf mutants  # mutmut keeps results there; a stale copy would mix old verdicts with new code
start=$(date +%s)
log=${TMPDIR:-/tmp}/cniplug-mutmut.log  # mutmut's progress line, redrawn thousands of times
.venv/bin/mutmut run --max-children "${JOBS:-2}" "$@" > "$log" 2>&1 || { tail -c 3000 "$log"; exit 1; }
.venv/bin/mutmut export-cicd-stats > /dev/null
.venv/bin/python - "$(( $(date +%s) - start ))" <<'PY'
import json, sys
s = json.load(open("mutants/mutmut-cicd-stats.json"))
tested = s["killed"] + s["survived"] + s["timeout"] + s["suspicious"]
print(f"mutants {s['total']}: killed {s['killed']}, survived {s['survived']}, timeout {s['timeout']}, "
      f"no tests {s['no_tests']}, skipped {s['skipped']}, suspicious {s['suspicious']}; "
      f"score {100 * (s['killed'] + s['timeout']) / max(tested, 1):.1f}% of tested; {sys.argv[1]} s")
PY
