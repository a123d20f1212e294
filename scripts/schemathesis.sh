#!/usr/bin/env bash
# Property-based API testing with schemathesis against /openapi.json of a live api, on a
# database of its own. Run by CI (.ci/run, bounded by ST_MAX_EXAMPLES / ST_MAX_TIME). See
# docs/security.md, "Testing tools".
#
#   scripts/schemathesis.sh
#   ST_MAX_EXAMPLES=50 ST_MAX_TIME=300 scripts/schemathesis.sh
#   ST_CHECKS=not_a_server_error,response_schema_conformance scripts/schemathesis.sh
#
# Steps: build the api (target/debug/api, or under CARGO_TARGET_DIR); pick a free port and a
# new database (ce_schemathesis_<random>, created by the api); `api bootstrap` for a token,
# and `api token create` for an instance administrator's token (all four permissions);
# `api serve`; wait for /readyz; create a few users and OTP Email authenticators whose ids
# schemathesis uses for part of the path parameters (with the instance and organization ids);
# run schemathesis twice, with the administrator's bearer token and without, with every check (`--checks all`) and every phase (examples, coverage,
# fuzzing, and the stateful phase that follows the document's links); stop the server and
# drop the database.
#
# Pass: no failure of any check in either run (the few checks that do not apply to an
# operation by design are switched off for it in the generated configuration, each with its
# reason), and no 5xx in the api log. Exit status 0 on a pass, 1 on a failure, 2 when the
# setup failed. Logs and reports: var/schemathesis/. Needs no terminal (CI=true is fine).
#
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, no password), psql, curl and python3;
# schemathesis is installed into a venv (ST_VENV, default var/schemathesis-venv) from PyPI.
# RabbitMQ is not needed: mail jobs wait in the outbox. Only 127.0.0.1 is contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

ST_VERSION=${ST_VERSION:-4.32.5}
ST_VENV=${ST_VENV:-$root/var/schemathesis-venv}
ST_MAX_EXAMPLES=${ST_MAX_EXAMPLES:-30}
ST_MAX_TIME=${ST_MAX_TIME:-240}
ST_SEED=${ST_SEED:-}
# The phases to run; CI leaves out `coverage` (see .ci/run).
ST_PHASES=${ST_PHASES:-examples,coverage,fuzzing,stateful}
ST_CHECKS=${ST_CHECKS:-all}
out="$root/var/schemathesis"
mkdir -p "$out"
rm -f "$out"/*.log "$out"/*.xml

fail_setup() {
  echo "schemathesis.sh: $*" >&2
  exit 2
}

command -v psql >/dev/null || fail_setup "psql is missing"
command -v curl >/dev/null || fail_setup "curl is missing"

# schemathesis, pinned: the configuration below uses its 4.x format.
if ! "$ST_VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$ST_VERSION"; then
  echo "installing schemathesis $ST_VERSION into $ST_VENV" >&2
  python3 -m venv "$ST_VENV" </dev/null || fail_setup "python3 -m venv failed"
  "$ST_VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$ST_VERSION" </dev/null \
    || fail_setup "pip install failed"
fi
st="$ST_VENV/bin/schemathesis"

if [[ -z "${SKIP_BUILD:-}" ]]; then
  echo "building target/debug/api" >&2
  cargo build --quiet -p api --bin api || fail_setup "build failed"
fi
api="${CARGO_TARGET_DIR:-$root/target}/debug/api"
[[ -x $api ]] || fail_setup "$api is missing"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
db="ce_schemathesis_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
base="http://127.0.0.1:$port"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
export API_ADDR="127.0.0.1:$port"
CODE_ENCRYPTION_KEY=$(head -c32 /dev/urandom | base64)
export CODE_ENCRYPTION_KEY
# Nothing listens here: mail jobs stay in the outbox; the api starts anyway (SPEC 3.5).
export AMQP_URL="amqp://guest:guest@127.0.0.1:1/%2f"
export LOG_FORMAT=json
# Limits off, so that generated requests reach the code paths behind them.
export RESEND_COOLDOWN=0s MAIL_RECIPIENT_HOURLY_LIMIT=0
# The seeded users get many authenticators; the limit of 10 (400, code 9) would turn valid
# add-OTP-Email requests into refusals that positive_data_acceptance reports.
export OTP_EMAIL_MAX_PER_USER=1000000
unset DEV_MODE SMTP_URL

server_pid=""
cleanup() {
  local status=$?
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" \
    >/dev/null 2>&1 || echo "could not drop database $db" >&2
  exit "$status"
}
trap cleanup EXIT
trap 'exit 2' INT TERM

echo "database $db, api on $base" >&2
"$api" bootstrap >"$out/bootstrap.json" 2>"$out/bootstrap.log" \
  || fail_setup "api bootstrap failed; see $out/bootstrap.log"
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$out/bootstrap.json" "$1"; }
token=$(field token)
instance_id=$(field instanceId)
org_id=$(field orgId)
org_domain=$(field orgDomain)
rm -f "$out/bootstrap.json"
# The run "with a token" uses an instance administrator's token (every permission, the
# instance's mail settings and organizations' branding included), so that those operations
# get past 403 too.
admin_token=$("$api" token create --instance "$instance_id" \
  --permission user.read,user.write,instance.read,instance.write 2>"$out/token.log") \
  || fail_setup "api token create failed; see $out/token.log"

"$api" serve >"$out/api.log" 2>&1 &
server_pid=$!
ready=""
for _ in $(seq 1 300); do
  if curl -fsS "$base/readyz" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.2
done
[[ -n $ready ]] || { tail -n 20 "$out/api.log" >&2; fail_setup "api did not become ready"; }

# Existing users and authenticators, so that part of the requests get past "not found".
users=() otps=()
for i in 1 2 3 4 5 6; do
  user=$(curl -fsS -X POST "$base/v3alpha/users" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' \
    -d "{\"username\":\"st$i\",\"email\":{\"address\":\"st$i@example.com\",\"returnCode\":{}}}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') || fail_setup "create user failed"
  users+=("$user")
  otp=$(curl -fsS -X POST "$base/v3alpha/users/$user/otp_email" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' \
    -d "{\"email\":{\"address\":\"otp$i@example.com\",\"returnCode\":{}}}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["otpEmailId"])') || fail_setup "add OTP Email failed"
  otps+=("$otp")
done
join() { local IFS=,; printf '"%s"' "$1"; shift; for v in "$@"; do printf ',"%s"' "$v"; done; }
config="$out/schemathesis.toml"
cat >"$config" <<EOF
# Generated by scripts/schemathesis.sh: path and scope parameters name existing things half
# of the time, so that requests get past "not found". Its cache stays under var/.
[cache]
directory = "$out/cache"
[dictionaries.users]
values = [$(join "${users[@]}")]
[dictionaries.otps]
values = [$(join "${otps[@]}")]
[dictionaries.instance_ids]
values = ["$instance_id"]
[dictionaries.instance_domains]
values = ["localhost"]
[dictionaries.org_ids]
values = ["$org_id"]
[dictionaries.org_domains]
values = ["$org_domain"]
[parameters]
"path.userId" = { dictionary = "users", probability = 0.5 }
"path.id" = { dictionary = "users", probability = 0.5 }
"path.otpEmailId" = { dictionary = "otps", probability = 0.5 }
"path.instanceId" = { dictionary = "instance_ids", probability = 0.5 }
"path.orgId" = { dictionary = "org_ids", probability = 0.5 }
"query.instance.id" = { dictionary = "instance_ids", probability = 0.5 }
"query.instance.domain" = { dictionary = "instance_domains", probability = 0.5 }
"query.organization.orgId" = { dictionary = "org_ids", probability = 0.5 }
"query.organization.orgDomain" = { dictionary = "org_domains", probability = 0.5 }

# Stateful phase: follow the links the document declares (from create user, set email and
# add OTP Email to the calls on what they made). Schemathesis's own inference of links is
# off: the links it infers name the dotted query parameters ("query.organization.orgId"),
# which its link parser splits at every dot and then rejects as unknown (4.32.5).
[phases.stateful.inference]
algorithms = []

# Verify: a schema-valid code may be the wrong one, or the user's code may be expired or void
# after too many wrong ones; SPEC 3.4 answers 400 (CODE-woT0xc, CODE-QvUQ4P, CODE-Lk7Gq2).
# Whether a code is right depends on state a generated request cannot know, so
# positive_data_acceptance does not apply. Every other check does.
[[operations]]
include-operation-id = ["a_verify_email", "b_verify_email", "a_verify_otp_email", "b_verify_otp_email"]
checks.positive_data_acceptance.enabled = false

# Resend: with no pending code (no address, or already verified) SPEC 3.4 answers 400, code 9
# (COMMAND-QRkNTBwF8q), however valid the request; that depends on state, not on the request.
[[operations]]
include-operation-id = ["a_resend_email", "b_resend_email", "a_resend_otp_email", "b_resend_otp_email"]
checks.positive_data_acceptance.enabled = false

# Create user: a BCP 47 tag that repeats a variant or an extension singleton ("de-a-b-a-c")
# is refused (RFC 5646 2.2.5, 2.2.6), which a pattern cannot say (the schema's description
# does); the schema cannot be made stricter either, or tags the server rightly takes would
# count as negative data.
[[operations]]
include-operation-id = ["create_user"]
checks.positive_data_acceptance.enabled = false

# Mail settings and branding (SPEC 9): "from" is "Name <address>", provider URLs and the
# logo are URLs of given forms, the provider is exactly one of smtp / http: rules the
# schema states in prose. And whether "***" (keep the stored secret) or an HTTP provider
# without a signing key is accepted depends on what is stored, not on the request. (This
# text is inside an unquoted here-document: no backquotes or dollar signs.)
[[operations]]
include-operation-id = ["put_mail_settings", "put_org_branding"]
checks.positive_data_acceptance.enabled = false
EOF

run_st() { # name [extra args...]
  local name=$1
  shift
  local args=(run "$base/openapi.json" --max-examples "$ST_MAX_EXAMPLES"
    --phases "$ST_PHASES"
    --max-time "$ST_MAX_TIME" --workers 2 --request-timeout 10 --continue-on-failure
    --report junit --report-junit-path "$out/$name.xml" --output-truncate false)
  # Every check is on by default; `--checks all` on the command line would also override the
  # per-operation switches of the configuration, so it is passed only for a narrower choice.
  [[ $ST_CHECKS != all ]] && args+=(--checks "$ST_CHECKS")
  [[ -n $ST_SEED ]] && args+=(--seed "$ST_SEED")
  echo "schemathesis: $name (checks: $ST_CHECKS)" >&2
  local status=0
  "$st" --config-file "$config" "${args[@]}" "$@" </dev/null >"$out/$name.log" 2>&1 || status=$?
  # The summary at the end of the output.
  sed -n '/^=* *SUMMARY/,$p' "$out/$name.log" | grep -v '^$' | head -n 40 >&2 || true
  echo "$name: schemathesis exit status $status (log: var/schemathesis/$name.log)" >&2
  return "$status"
}

failed=0
run_st with-token -H "Authorization: Bearer $admin_token" || failed=1
run_st without-token || failed=1

# The server's own view: no request may have ended in a 5xx.
server_errors=$(grep -c '"status":5[0-9][0-9]' "$out/api.log" || true)
echo "5xx answers in the api log: $server_errors" >&2
[[ $server_errors -eq 0 ]] || failed=1

if [[ $failed -ne 0 ]]; then
  echo "schemathesis.sh: FAILED (see var/schemathesis/)" >&2
  exit 1
fi
echo "schemathesis.sh: passed (checks: $ST_CHECKS, no failure and no 5xx, with and without a token)" >&2
