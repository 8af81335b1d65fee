#!/usr/bin/env bash
# Start a training as NODES nodes x 1 process on this machine, the way a cluster launcher starts
# one process per node (Lightning's general-cluster variables: MASTER_ADDR, MASTER_PORT,
# WORLD_SIZE, NODE_RANK), with trainer=ddp on CPU (gloo). Node i runs in RUN/node<i> and logs to
# RUN/node<i>.log. As root, the nodes share a network namespace of their own with only loopback
# up, so nothing they open listens on any other address; otherwise they run in the machine's
# namespace, on loopback (GLOO_SOCKET_IFNAME=lo).
#   usage: scripts/loopback_nodes.sh NODES PORT RUN [train.py overrides...]
#   e.g.   scripts/loopback_nodes.sh 2 29512 outputs/two_nodes trainer.max_steps=20
set -euo pipefail
if [ "${1:-}" = "--inside" ]; then  # in the namespace: bring loopback up first
    shift
    ip link set lo up
else
    NODES=${1:?usage: $0 NODES PORT RUN [overrides...]}
    [ $# -ge 3 ] || { echo "usage: $0 NODES PORT RUN [overrides...]" >&2; exit 2; }
    if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
        exec unshare -n "$0" --inside "$@"
    fi
fi
NODES=$1 PORT=$2 RUN=$3
shift 3
PY=${PY:-python}
cd "$(dirname "$0")/.."
mkdir -p "$RUN"
pids=()
stop() {  # SIGTERM first (Lightning may catch it once), then SIGKILL whatever is left
    kill "${pids[@]}" 2>/dev/null || true
    sleep 2
    kill -9 "${pids[@]}" 2>/dev/null || true
}
trap 'stop; exit 130' INT TERM
for ((i = 0; i < NODES; i++)); do
    MASTER_ADDR=127.0.0.1 MASTER_PORT=$PORT WORLD_SIZE=$NODES NODE_RANK=$i GLOO_SOCKET_IFNAME=lo \
        "$PY" train.py trainer=ddp trainer.accelerator=cpu trainer.devices=1 trainer.num_nodes="$NODES" \
        hydra.run.dir="$RUN/node$i" "$@" >"$RUN/node$i.log" 2>&1 &
    pids+=($!)
done
status=0
for ((k = 0; k < NODES; k++)); do  # a node that fails ends the others (they would wait for it)
    if ! wait -n; then
        status=1
        stop
    fi
done
exit "$status"
