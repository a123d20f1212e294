#!/usr/bin/env bash
# Runs the whole system locally: builds the binaries, prepares the database, bootstraps an
# instance with an admin token, and starts `api serve` and `worker run` in the background
# against the local PostgreSQL and RabbitMQ. Without SMTP_URL, mails are written to var/mail.
#
#   scripts/quickstart.sh          start (or restart) everything
#   scripts/quickstart.sh stop     stop the api and the worker
#   scripts/quickstart.sh reset    stop, drop the database and the RabbitMQ queues, empty var/
set -euo pipefail
cd "$(dirname "$0")/.."

VAR=${VAR:-var}
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/contact_email}
AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}

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

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# host and port of a URL such as postgres://user@host:5432/db
host_port() { # url default-port
  local rest=${1#*://}
  rest=${rest#*@}
  rest=${rest%%/*}
  local host=${rest%%:*}
  local port=${rest##*:}
  [[ "$port" == "$rest" ]] && port=$2
  echo "$host $port"
}

# PostgreSQL and RabbitMQ on this machine: started when installed but stopped; a one-line
# hint when missing. Remote servers are only checked.
need_services() {
  read -r pg_host pg_port <<<"$(host_port "$DATABASE_URL" 5432)"
  read -r mq_host mq_port <<<"$(host_port "${AMQP_URL%%,*}" 5672)"
  if ! port_open "$pg_host" "$pg_port"; then
    if [[ "$pg_host" =~ ^(127\.0\.0\.1|localhost)$ ]] && command -v pg_ctlcluster >/dev/null; then
      echo "starting PostgreSQL..." >&2
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
      for _ in $(seq 1 60); do port_open "$pg_host" "$pg_port" && break; sleep 0.5; done
    else
      echo "PostgreSQL is not reachable at $pg_host:$pg_port; install it (Debian: apt-get install postgresql) or set DATABASE_URL" >&2
      exit 1
    fi
  fi
  if ! port_open "$mq_host" "$mq_port"; then
    if [[ "$mq_host" =~ ^(127\.0\.0\.1|localhost)$ ]] && command -v rabbitmq-server >/dev/null; then
      echo "starting RabbitMQ..." >&2
      rabbitmq-server -detached
      rabbitmqctl await_startup >/dev/null
    else
      echo "RabbitMQ is not reachable at $mq_host:$mq_port; install it (Debian: apt-get install rabbitmq-server) or set AMQP_URL" >&2
      exit 1
    fi
  fi
}

case "${1:-}" in
  stop)
    stop
    echo "stopped"
    exit 0
    ;;
  reset)
    stop
    need_services
    db=${DATABASE_URL##*/}
    db=${db%%\?*}
    psql "${DATABASE_URL%/*}/postgres" -q -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
    vhost=${AMQP_URL%%,*}
    vhost=${vhost##*/}
    [[ -z "$vhost" || "$vhost" == "%2f" || "$vhost" == "%2F" ]] && vhost=/
    if command -v rabbitmqctl >/dev/null; then
      for q in mail.send mail.dead mail.retry.1s mail.retry.5s mail.retry.30s mail.retry.5m mail.retry.30m; do
        rabbitmqctl -q -p "$vhost" delete_queue "$q" >/dev/null 2>&1 || true
      done
    fi
    rm -rf "$VAR"
    echo "reset: database $db dropped, queues deleted, $VAR/ removed"
    exit 0
    ;;
  "") ;;
  *)
    echo "usage: scripts/quickstart.sh [stop|reset]" >&2
    exit 2
    ;;
esac

mkdir -p "$VAR/log" "$VAR/mail"
need_services

stop
echo "building (first time: a few minutes)..." >&2
if ! command -v cargo >/dev/null; then
  echo "cargo is not installed: install the Rust toolchain (rustup, stable) first" >&2
  exit 1
fi
cargo build --quiet --bins -p api -p worker

export DATABASE_URL AMQP_URL
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
The commands api and worker:  export PATH="\$PWD/target/debug:\$PATH"
Stop with: scripts/quickstart.sh stop   (clean slate: scripts/quickstart.sh reset)
MSG
