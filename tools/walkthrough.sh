#!/usr/bin/env bash
# Runs the README's walk-through ("## A walk through with curl") top to bottom, exactly as the
# README writes it, against a fresh `phip serve` on a temp data directory and a free port, and
# checks every answer. The commands are read from README.md itself, so the README cannot drift
# from what is run; only the port (8080) is replaced by the free one, and `phip` is the binary
# built here. Each step (a `# comment` line and the commands under it) must have a check below,
# and each check a step: a walk-through step added or reworded without its check fails.
#
#   tools/walkthrough.sh              # builds phip (debug) and runs
#   PHIP_BIN=target/release/phip tools/walkthrough.sh
#
# Needs bash, curl, sed and python3 (for the checks); works on a fresh clone (it uses only
# committed fixtures). CI (.ci/run) runs it after the tests.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export RUST_BACKTRACE=0

if [[ -z "${PHIP_BIN:-}" ]]; then
    cargo build --quiet --locked -p phip
    PHIP_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/phip"
fi
PHIP_BIN=$(cd "$(dirname "$PHIP_BIN")" && pwd)/$(basename "$PHIP_BIN")
[[ -x "$PHIP_BIN" ]] || { echo "walkthrough: no phip binary at $PHIP_BIN" >&2; exit 1; }

WORK=$(mktemp -d)
SERVER=
stop() {
    if [[ -n "$SERVER" ]] && kill -0 "$SERVER" 2>/dev/null; then
        kill -TERM "$SERVER"
        wait "$SERVER" || true
    fi
    rm -rf "$WORK"
}
trap stop EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PHIP_DATA_DIR="$WORK/data"
# Checkpoints every 10 audit records (default 1000), so that `phip audit head` has one to print
# by the time the walk-through asks for it.
cat > "$WORK/phip.toml" <<EOF
[audit]
checkpoint_every = 10
EOF
"$PHIP_BIN" serve --listen "127.0.0.1:$PORT" --config "$WORK/phip.toml" > "$WORK/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$PORT/health" > /dev/null 2>&1 && break
    kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/serve.log" >&2; echo "walkthrough: phip serve exited" >&2; exit 1; }
    sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/health" > /dev/null || { echo "walkthrough: server not healthy" >&2; exit 1; }

# The checks, one per step, keyed by the step's comment line. Each gets the step's output
# (stdout and stderr) and the shell variables the walk-through has set so far.
cat > "$WORK/check.py" <<'PY'
import json, os, re, sys

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def documents(text):
    """The JSON documents in a step's output (curl prints them back to back), and the rest."""
    decoder, docs, rest, i = json.JSONDecoder(), [], [], 0
    while i < len(text):
        if text[i] == "{":
            try:
                doc, end = decoder.raw_decode(text, i)
                docs.append(doc)
                i = end
                continue
            except json.JSONDecodeError:
                pass
        rest.append(text[i])
        i += 1
    return docs, "".join(rest)


def need(condition, message):
    if not condition:
        raise AssertionError(message)


def resources(bundle, mode=None):
    return [e["resource"] for e in bundle.get("entry", [])
            if mode is None or e.get("search", {}).get("mode") == mode]


def setup(docs, text, env):
    need(len(env.get("TOKEN", "")) > 100, "phip token printed no token")
    need(not docs and not text.strip(), f"unexpected output: {text}")


def create(docs, text, env):
    need(UUID.match(env.get("ID", "")), f"no id from the Location header: {env.get('ID')!r}")
    need(f"created Patient/{env['ID']}" in text, text)


def read_search(docs, text, env):
    need(len(docs) == 3, f"three answers expected, got {len(docs)}: {text}")
    patient, by_name, by_identifier = docs
    need(patient.get("id") == env["ID"] and patient["meta"]["versionId"] == "1", patient)
    need(by_name.get("total") == 1 and resources(by_name)[0]["id"] == env["ID"], by_name)
    found = resources(by_identifier)
    need(len(found) == 1 and found[0]["id"] == env["ID"], by_identifier)
    need("name" in found[0] and "gender" not in found[0], f"_elements=name: {found[0]}")


def update(docs, text, env):
    need(len(docs) == 2, text)
    updated, refused = docs
    need(updated.get("resourceType") == "Patient" and updated["meta"]["versionId"] == "2", updated)
    need(updated["telecom"][0]["value"] == "13800138000", updated)
    need(refused.get("resourceType") == "OperationOutcome", f"the second update must fail: {refused}")


def history(docs, text, env):
    (bundle,) = docs
    versions = [r["meta"]["versionId"] for r in resources(bundle)]
    need(bundle["type"] == "history" and versions == ["2", "1"], bundle)


def transaction(docs, text, env):
    response, search = docs
    statuses = [e["response"]["status"] for e in response["entry"]]
    need(response["type"] == "transaction-response" and statuses == ["201 Created"] * 2, response)
    found = resources(search)
    need(len(found) == 1 and found[0]["subject"]["reference"].startswith("Patient/"), search)
    need(found[0]["valueQuantity"]["value"] == 128, search)


def index(docs, text, env):
    need(len(docs) == 2 and all(d.get("resourceType") == "Patient" for d in docs), text)
    golden = [[l["other"]["reference"] for l in d.get("link", []) if l["type"] == "refer"]
              for d in docs]
    need(golden[0] and golden[0] == golden[1], f"one golden record for both: {golden}")


def person(docs, text, env):
    master, pix = docs
    found = resources(master)
    need(len(found) == 1, master)
    identifiers = {i["value"] for i in found[0]["identifier"]}
    need({"A-001", "B-77"} <= identifiers, identifiers)
    need(pix["resourceType"] == "Parameters" and "B-77" in json.dumps(pix), pix)


def load(docs, text, env):
    need("imported 674 resources from 7 files" in text and "; 0 rejected" in text, text)
    need("no conditional reference left unresolved" in text, text)
    count, encounter = docs
    need(count.get("total") == 98, count)
    included = {r["resourceType"] for r in resources(encounter, "include")}
    need(len(resources(encounter, "match")) == 1 and included == {"Practitioner", "Location"},
         encounter)


def audit(docs, text, env):
    (events,) = docs
    need(events["type"] == "searchset" and len(resources(events)) >= 4, events)
    need(all(r["resourceType"] == "AuditEvent" for r in resources(events)), events)
    need(text.count("audit trail intact") == 2, text)
    need(env.get("CHECKPOINT", "").startswith("phip-audit-checkpoint seq="), env.get("CHECKPOINT"))


CHECKS = {
    "": setup,
    "# Create a patient: the server assigns the id (in the Location header) and version 1": create,
    "# Read it, search it": read_search,
    "# Update it only if nobody else changed it (If-Match: version 1); the same update again gets 412": update,
    "# Its history: both versions, newest first": history,
    "# A transaction: both resources or neither; the urn:uuid reference is rewritten": transaction,
    "# The patient index: two institutions register the same resident (valid resident ID)": index,
    "# One person: both records refer to the same golden record; PIXm cross-references them": person,
    "# Load Synthea's bundles (any NDJSON or Bundle files and directories; see \"Importing\" below)": load,
    "# Who accessed Zhang Wei's record, and is the audit trail intact?": audit,
}

if __name__ == "__main__":
    if sys.argv[1] == "--steps":
        # The step titles of the README, one per line: each must have a check and vice versa.
        titles = [line.rstrip("\n") for line in open(sys.argv[2], encoding="utf-8")]
        missing = [t for t in titles if t not in CHECKS]
        unused = [t for t in CHECKS if t not in titles]
        for t in missing:
            print(f"walkthrough: README step without a check: {t!r}", file=sys.stderr)
        for t in unused:
            print(f"walkthrough: check for a step the README no longer has: {t!r}", file=sys.stderr)
        sys.exit(1 if missing or unused else 0)
    title, output = sys.argv[1], sys.argv[2]
    text = open(output, encoding="utf-8").read()
    docs, rest = documents(text)
    try:
        CHECKS[title](docs, rest, os.environ)
    except (AssertionError, KeyError, IndexError, TypeError, ValueError) as e:
        print(f"walkthrough: FAILED at step {title or '(setup)'!r}: {type(e).__name__}: {e}",
              file=sys.stderr)
        print("---- output ----", file=sys.stderr)
        print(text, file=sys.stderr)
        sys.exit(1)
    print(f"ok  {title[2:] if title else '(setup)'}")
PY

# The README's block, cut into steps at its comment lines, run in one shell so that the
# variables of a step (TOKEN, ID…) carry to the next; each step's output goes to a file and is
# checked before the next step runs.
python3 - "$ROOT/README.md" "$WORK" "$PORT" <<'PY'
import os, sys

readme, work, port = sys.argv[1], sys.argv[2], sys.argv[3]
lines = open(readme, encoding="utf-8").read().split("\n")
start = lines.index("## A walk through with curl")
begin = next(i for i in range(start, len(lines)) if lines[i] == "```sh") + 1
end = next(i for i in range(begin, len(lines)) if lines[i] == "```")
steps = [["", []]]
for line in lines[begin:end]:
    if line.startswith("# "):
        steps.append([line, []])
    else:
        steps[-1][1].append(line.replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
with open(os.path.join(work, "steps.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(title for title, _ in steps) + "\n")
out = [
    "set -Eeuo pipefail",
    "set -a",
    'phip() { "$PHIP_BIN" "$@"; }',
    # A command that fails stops the walk-through, naming its step and showing its output
    # (on fd 3: inside a step, stderr goes to the step's output file).
    "exec 3>&2",
    """trap 'echo "walkthrough: FAILED in step ${TITLE:-(setup)} (exit $?); its output:" >&3; cat "$WORK/out.$STEP" >&3' ERR""",
]
for n, (title, body) in enumerate(steps):
    quoted = "'" + title.replace("'", "'\\''") + "'"
    out.append(f"STEP={n} TITLE={quoted}")
    out.append(f"{{\n" + "\n".join(body) + f"\n}} > \"$WORK/out.{n}\" 2>&1")
    out.append(f'python3 "$WORK/check.py" {quoted} "$WORK/out.{n}"')
with open(os.path.join(work, "run.sh"), "w", encoding="utf-8") as f:
    f.write("\n".join(out) + "\n")
PY
python3 "$WORK/check.py" --steps "$WORK/steps.txt"
export PHIP_BIN WORK
bash "$WORK/run.sh" || {
    echo "walkthrough: failed; server log:" >&2
    tail -20 "$WORK/serve.log" >&2
    exit 1
}
echo "walkthrough: every step of README.md's walk-through ran and answered as expected"
