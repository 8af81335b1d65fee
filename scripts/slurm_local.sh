#!/usr/bin/env bash
# `make slurm-check`: a real Slurm on this one machine, bound to loopback, then the project's SLURM
# paths through it:
#   1. a 2-job sweep, `python sweep.py -m hydra/launcher=slurm ...` (hydra-submitit-launcher
#      submits the jobs with sbatch; the records are gathered as on the basic launcher);
#   2. a 2-task `srun` DDP training (2 CPU ranks, gloo) under Lightning's SLURM environment, which
#      trains and checkpoints;
#   3. a training that `scancel` kills mid-run, submitted again with ckpt_path=last, resumes from
#      its last checkpoint.
# Installs Debian's slurmctld, slurmd, slurm-client and munge when they are missing (needs root);
# munged, slurmctld and slurmd are started by hand (no systemd) in a network namespace of their
# own with only loopback up, so nothing listens on any other address; all of it is stopped at the
# end. Work files and logs: outputs/slurm_check/ (the log: outputs/slurm_check/check.log).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/outputs/slurm_check
PY=${PY:-$ROOT/.venv/bin/python}

if [ "${1:-}" != --inside ]; then
    [ "$(id -u)" = 0 ] || { echo "slurm_local.sh: run as root (it installs packages and starts daemons)" >&2; exit 2; }
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        echo "== installing Debian's Slurm and MUNGE"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            slurmctld slurmd slurm-client munge >/dev/null
    fi
    if [ ! -f /etc/munge/munge.key ]; then  # Debian's postinst makes one; be sure
        install -d -m 0700 /etc/munge && mungekey --create
    fi
    rm -rf "$OUT" && mkdir -p "$OUT"
    set +e
    unshare -n "$0" --inside 2>&1 | tee "$OUT/check.log"
    status=${PIPESTATUS[0]}
    echo "slurm_local.sh: exit $status (log: $OUT/check.log)"
    exit "$status"
fi

# ---------------------------------------------------------------- in the namespace: loopback only
ip link set lo up
# glibc's getaddrinfo(AI_ADDRCONFIG), which Slurm binds with, offers IPv4 only when an IPv4 address
# other than 127.0.0.1 exists; a second loopback address is one, and still loopback
ip addr add 127.0.0.2/8 dev lo 2>/dev/null || true
NODE=$(hostname -s)
STATE=$OUT/state
mkdir -p "$STATE"/{ctld,spool,munge,run}
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
export SLURM_CONF=$STATE/slurm.conf
cat >"$SLURM_CONF" <<EOF
ClusterName=loopback
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
CommunicationParameters=NoInAddrAny
ReturnToService=2
SchedulerType=sched/backfill
KillWait=10
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

cleanup() {  # cancel what is left, let its steps end, then stop the daemons and wait for them
    scancel --user=root >/dev/null 2>&1 || true
    for _ in $(seq 20); do
        squeue -h 2>/dev/null | grep -q . || break
        sleep 1
    done
    pkill -f slurmstepd 2>/dev/null || true
    local pids=()
    for file in "$STATE"/run/slurmd.pid "$STATE"/run/slurmctld.pid "$STATE"/run/munged.pid; do
        [ -f "$file" ] && pids+=("$(cat "$file")")
    done
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 20); do
        kill -0 "${pids[@]}" 2>/dev/null || break
        sleep 0.5
    done
}
trap cleanup EXIT

echo "== starting munged, slurmctld, slurmd (loopback only)"
munged --force --socket="$STATE/munge/munge.socket" --pid-file="$STATE/run/munged.pid" \
    --log-file="$STATE/munged.log" --seed-file="$STATE/munge/seed"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
idle=false
for _ in $(seq 60); do
    sinfo -h -o %T 2>/dev/null | grep -qx idle && { idle=true; break; }
    sleep 1
done
sinfo
$idle || { echo "the node never became idle; see $STATE/slurmd.log and $STATE/slurmctld.log" >&2; exit 1; }
echo "== this namespace's interfaces and listening sockets"
ip -br addr | tee "$OUT/interfaces.txt"
ss -ltn | tee "$OUT/listening.txt"
# Only lo exists here, so a wildcard socket (slurmctld's 0.0.0.0) is reachable on loopback only.
if awk '{print $1}' "$OUT/interfaces.txt" | grep -vx lo | grep -q .; then
    echo "an interface other than lo in the namespace" >&2
    exit 1
fi

# The smallest NCSN++ on a small generated corpus: the paths, not the model, are what is checked.
TINY=(backbone=ncsnpp_tiny backbone.nf=8 "backbone.ch_mult=[1,2]" backbone.num_res_blocks=1
    "backbone.attn_resolutions=[]" trainer=cpu logger=csv data.num_frames=32 data.batch_size=2
    data.num_workers=0 data.synthetic.num_train=8 data.synthetic.num_valid=2 data.synthetic.num_test=2
    "data.synthetic.duration_s=[1.0,1.5]" "paths.data_dir=$OUT/data" trainer.max_epochs=-1
    trainer.num_sanity_val_steps=0 trainer.enable_progress_bar=false callbacks.progress=null
    callbacks.val_metrics.num_media=0)
export GLOO_SOCKET_IFNAME=lo
wait_for() {  # wait_for JOBID: until the job has left the queue; prints its final state
    for _ in $(seq 900); do
        squeue -h -j "$1" 2>/dev/null | grep -q . || break
        sleep 1
    done
    scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' || echo "JobState=(purged)"
}
ckpt_step() {  # ckpt_step FILE: the global step a checkpoint was written at
    "$PY" -c "import sys, torch; print(torch.load(sys.argv[1], map_location='cpu', weights_only=False)['global_step'])" "$1"
}

echo "== 1. a 2-job sweep through sbatch: python sweep.py -m hydra/launcher=slurm"
timeout 900 "$PY" sweep.py -m hydra/launcher=slurm hydra.launcher.partition=debug hydra.launcher.gpus_per_node=null \
    hydra.launcher.cpus_per_task=1 hydra.launcher.mem_gb=4 hydra.launcher.timeout_min=30 \
    "${TINY[@]}" logger=none trainer.max_steps=2 sweep.eval_nfe=[1] sweep.group=slurm-check \
    mf.first_order_coef=0.5,1.0 mf.jvp_impl=func "hydra.sweep.dir=$OUT/sweep"
echo "job ids (array_task): $(find "$OUT/sweep/.submitit" -mindepth 1 -maxdepth 1 -type d -name '*_*' -printf '%f\n' | sort | tr '\n' ' ')"
cat "$OUT/sweep/sweep_results.md"
grep -H -o '"status": "[a-z]*"' "$OUT"/sweep/*/sweep_job.json
test "$(grep -l '"status": "ok"' "$OUT"/sweep/*/sweep_job.json | wc -l)" = 2

echo "== 2. a 2-task srun DDP training (2 CPU ranks, gloo) under Lightning's SLURM environment"
ddp_job() {  # ddp_job RUN_DIR MAX_STEPS [overrides...]: submit; prints the job id
    local run=$1 steps=$2
    shift 2
    sbatch --parsable --job-name=ddp-check --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --mem=4G \
        --time=30 --output="$run.out" --wrap="srun $PY train.py ${TINY[*]} trainer=ddp \
        trainer.accelerator=cpu trainer.devices=2 trainer.num_nodes=1 trainer.max_steps=$steps \
        hydra.run.dir=$run $*"
}
job=$(ddp_job "$OUT/ddp" 4)
echo "job id: $job"
wait_for "$job"
grep -E "GLOBAL_RANK|Restored|Trainer.fit. stopped" "$OUT/ddp.out" || true
step=$(ckpt_step "$OUT/ddp/checkpoints/last.ckpt")
echo "checkpoint $OUT/ddp/checkpoints/last.ckpt: step $step"
test "$step" = 4

echo "== 3. scancel a training mid-run, submit it again with ckpt_path=last: it resumes"
NO_VAL=(callbacks.val_metrics=null trainer.limit_val_batches=0 callbacks.best_si_sdr=null
    callbacks.model_checkpoint.monitor=null)
job=$(ddp_job "$OUT/killed" 100000 callbacks.last_checkpoint.every_n_train_steps=5 "${NO_VAL[@]}")
echo "job id: $job"
for _ in $(seq 600); do
    [ -f "$OUT/killed/checkpoints/last.ckpt" ] && break
    sleep 1
done
sleep 10  # a few more checkpoints
scancel "$job"
wait_for "$job"
step=$(ckpt_step "$OUT/killed/checkpoints/last.ckpt")
echo "killed; its last checkpoint is at step $step"
job=$(ddp_job "$OUT/killed" $((step + 5)) ckpt_path=last "${NO_VAL[@]}")
echo "resubmitted: job id $job"
wait_for "$job"
grep -E "Restored|resum" "$OUT/killed.out" | head -3 || true
end=$(ckpt_step "$OUT/killed/checkpoints/last.ckpt")
echo "resumed from step $step, ended at step $end"
test "$end" = $((step + 5))
echo "== slurm-check passed"
