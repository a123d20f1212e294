#!/usr/bin/env bash
# Runs the whole system locally: builds the binaries, prepares the database, bootstraps an
# instance with an admin token, and starts `api serve` and `worker run` in the background
# against the local PostgreSQL and RabbitMQ. Without SMTP_URL, mails are written to var/mail.
#
#   scripts/quickstart.sh          start (or restart) everything
#   scripts/quickstart.sh stop     stop the api and the worker
set -euo pipefail
cd "$(dirname "$0")/.."

VAR=${VAR:-var}
mkdir -p "$VAR/log" "$VAR/mail"

stop() {
  for name in api worker; do
    if [[ -f "$VAR/$name.pid" ]]; then
      pid=$(cat "$VAR/$name.pid")
      if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      fi
      rm -f "$VAR/$name.pid"
    fi
  done
}

wait_ready() { # name url
  for _ in $(seq 1 150); do
    if curl -fsS "$2" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "$1 did not become ready; see $VAR/log/$1.log" >&2
  tail -n 20 "$VAR/log/$1.log" >&2
  exit 1
}

if [[ "${1:-}" == "stop" ]]; then
  stop
  echo "stopped"
  exit 0
fi

stop
echo "building (first time: a few minutes)..." >&2
cargo build --quiet --bins -p api -p worker

export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/contact_email}
export AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
export API_ADDR=${API_ADDR:-127.0.0.1:8080}
export WORKER_ADDR=${WORKER_ADDR:-127.0.0.1:8081}
export MAIL_DIR=${MAIL_DIR:-$VAR/mail}
export LOG_FORMAT=${LOG_FORMAT:-json}
# The code key: made once for this checkout (owner-only), kept in $VAR, reused on restarts.
if [[ -z "${CODE_ENCRYPTION_KEY:-}" ]]; then
  if [[ ! -s "$VAR/code_encryption_key" ]]; then
    (umask 077 && head -c 32 /dev/urandom | base64 > "$VAR/code_encryption_key")
  fi
  CODE_ENCRYPTION_KEY=$(cat "$VAR/code_encryption_key")
fi
export CODE_ENCRYPTION_KEY

target/debug/api bootstrap > "$VAR/bootstrap.json" 2>> "$VAR/log/bootstrap.log"
sed -n 's/.*"token":"\([^"]*\)".*/\1/p' "$VAR/bootstrap.json" > "$VAR/token"

nohup target/debug/api serve >> "$VAR/log/api.log" 2>&1 &
echo $! > "$VAR/api.pid"
nohup target/debug/worker run >> "$VAR/log/worker.log" 2>&1 &
echo $! > "$VAR/worker.pid"

wait_ready api "http://$API_ADDR/readyz"
wait_ready worker "http://$WORKER_ADDR/readyz"

cat <<MSG
Contact email service is running.
  API:          http://$API_ADDR   (logs: $VAR/log/api.log)
  worker:       http://$WORKER_ADDR (logs: $VAR/log/worker.log)
  mails:        ${SMTP_URL:-$MAIL_DIR/*.eml}
  admin token:  $VAR/token   (instance, organization and token: $VAR/bootstrap.json)
  code key:     $VAR/code_encryption_key (CODE_ENCRYPTION_KEY of api and worker)
Stop with: scripts/quickstart.sh stop
MSG
