#!/usr/bin/env bash
# The parity measurement queue (issue: score parity with the peers). Resumable: a finished cell
# (every seed's summary.json at the full step count) is skipped; an interrupted one continues from
# its checkpoint. Usage: scripts/parity/queue.sh LANE   (LANE = a file listing one cell name per line)
# Cells run one after another in a lane; run at most two lanes side by side on a 2-core machine.
set -u
REPO=$(cd "$(dirname "$0")/../.." && pwd)
ROOT=${PARITY_ROOT:-/work/parity}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 WANDB_MODE=disabled MUJOCO_GL=egl
export MINARI_DATASETS_PATH=${MINARI_DATASETS_PATH:-$ROOT/minari}
PY=${PARITY_PY:-$REPO/.venv/bin/python}
TRAIN=${PARITY_TRAIN:-$REPO/.venv/bin/cql-train}
STEPS=${PARITY_STEPS:-20000}
# Evaluate every 1k (the 5k/10k/15k/20k points are among them): on a shared 2-core machine a cell
# runs at 0.7-2.5 steps/s, and the early points are all a short session can see.
EVAL_EVERY=${PARITY_EVAL_EVERY:-1000}
# The parity budget: 3 seeds, 2x256, batch 256, N = 10, 10 evaluation episodes.
BUDGET=(seeds=[0,1,2] train.steps=$STEPS train.batch_size=256 network.hidden=[256,256] cql.n_actions=10
        eval.every=$EVAL_EVERY eval.episodes=10 train.threads=1 train.progress=false train.log_every=250
        train.checkpoint_every=1000 logger=none)
# The evidence suite's default budget (for the conservatism check): 20k steps, 2x128, eval every 1k, 5 episodes.
EVIDENCE=(seeds=[0,1,2] train.steps=20000 train.batch_size=256 network.hidden=[128,128] cql.n_actions=10
          eval.every=1000 eval.episodes=5 train.threads=1 train.progress=false train.log_every=250
          train.checkpoint_every=2000 logger=none)

env_args() {  # how cql-train reads each dataset (as the evidence suite does)
  case $1 in
    hopper-medium) echo "env=hopper-medium" ;;
    idp-medium) echo "env=hopper-medium env.name=inverteddoublependulum-medium dataset.id=cql_runner/inverteddoublependulum/medium-v0 eval.env_id=InvertedDoublePendulum-v5 env.ref_min_score=null env.ref_max_score=null" ;;
  esac
}

# ours-b: d3rlpy 2.8.1's CQL defaults converted to our keys (conservative_weight 5 -> alpha 2.5 because
# our TD term keeps the 1/2; alpha_threshold 10 -> tau 10 on the raw gap; temp/alpha lr 1e-4; actor/critic
# lr 1e-4/3e-4). Extra keys that exist only once the loss conventions land are added by cell name.
OURS_B=(cql.alpha=2.5 cql.lagrange=true cql.tau=10 cql.alpha_lr=1e-4 cql.policy_lr=1e-4 cql.critic_lr=3e-4
        cql.entropy_alpha_init=1.0 cql.alpha_prime_init=1.0 cql.deterministic_backup=true)

cell_done() {  # $1 = run dir, $2 = steps
  "$PY" - "$1" "$2" <<'PY'
import json, sys, pathlib
d, steps = pathlib.Path(sys.argv[1]), int(sys.argv[2])
files = sorted(d.glob("seed*/summary.json"))
ok = len(files) == 3 and all(json.loads(f.read_text()).get("steps") == steps for f in files)
sys.exit(0 if ok else 1)
PY
}

run_ours() {  # $1 = dataset, $2 = cell, rest = overrides
  local ds=$1 cell=$2; shift 2
  local dir=$ROOT/runs/$ds/$cell
  if cell_done "$dir" "$STEPS"; then echo "skip $ds/$cell (done)"; return 0; fi
  mkdir -p "$dir"
  echo "$(date -u +%FT%TZ) start $ds/$cell: $*" | tee -a "$ROOT/logs/queue.log"
  local t0=$SECONDS
  # shellcheck disable=SC2046
  nice -n 10 "$TRAIN" $(env_args "$ds") "$@" run_dir="$dir" hydra.run.dir="$dir" >> "$dir/train.log" 2>&1
  local rc=$?
  echo "$(date -u +%FT%TZ) end $ds/$cell rc=$rc wall=$((SECONDS - t0))s" | tee -a "$ROOT/logs/queue.log"
  echo "$rc $((SECONDS - t0))" >> "$dir/wall.txt"
}

run_peer() {  # $1 = dataset, $2 = algo (cql|bc)
  local ds=$1 algo=$2 dir=$ROOT/runs/$1/d3rlpy-$2
  if cell_done "$dir" "$STEPS"; then echo "skip $ds/d3rlpy-$algo (done)"; return 0; fi
  mkdir -p "$dir"
  echo "$(date -u +%FT%TZ) start $ds/d3rlpy-$algo" | tee -a "$ROOT/logs/queue.log"
  local t0=$SECONDS
  # shellcheck disable=SC2046
  nice -n 10 "$PY" -m cql_runner.peers run --algo "$algo" --venv "$ROOT/peer-venv" --run-dir "$dir" \
    --seeds 0 1 2 --steps "$STEPS" --eval-every "$EVAL_EVERY" --eval-episodes 10 --hidden 256 256 --batch-size 256 \
    --n-actions 10 -- $(env_args "$ds") >> "$dir/peer.log" 2>&1
  local rc=$?
  echo "$(date -u +%FT%TZ) end $ds/d3rlpy-$algo rc=$rc wall=$((SECONDS - t0))s" | tee -a "$ROOT/logs/queue.log"
  echo "$rc $((SECONDS - t0))" >> "$dir/wall.txt"
}

run_cell() {
  case $1 in
    */ours-a-main) run_ours "${1%%/*}" ours-a-main "${BUDGET[@]}" ;;
    */ours-a) run_ours "${1%%/*}" ours-a "${BUDGET[@]}" ;;
    */ours-b-main) run_ours "${1%%/*}" ours-b-main "${BUDGET[@]}" "${OURS_B[@]}" ;;
    */ours-b) run_ours "${1%%/*}" ours-b "${BUDGET[@]}" "${OURS_B[@]}" cql.alpha_prime_lr=1e-4 \
                cql.lagrange_form=raw cql.target_action=mean ;;
    # Probes: ours-b with ONE convention changed back, to find which one moves the score.
    */ours-b-sample) run_ours "${1%%/*}" ours-b-sample "${BUDGET[@]}" "${OURS_B[@]}" cql.alpha_prime_lr=1e-4 \
                       cql.lagrange_form=raw cql.target_action=sample ;;
    */ours-b-lr) run_ours "${1%%/*}" ours-b-lr "${BUDGET[@]}" "${OURS_B[@]}" cql.alpha_prime_lr=3e-4 \
                   cql.alpha_lr=3e-4 cql.lagrange_form=raw cql.target_action=mean ;;
    */ours-b-orth) run_ours "${1%%/*}" ours-b-orth "${BUDGET[@]}" "${OURS_B[@]}" cql.alpha_prime_lr=1e-4 \
                     cql.lagrange_form=raw cql.target_action=mean network.orthogonal_init=true ;;
    */ours-bc) run_ours "${1%%/*}" ours-bc "${BUDGET[@]}" cql=bc ;;
    */d3rlpy-cql) run_peer "${1%%/*}" cql ;;
    */d3rlpy-bc) run_peer "${1%%/*}" bc ;;
    hopper-medium/tau10-evidence) run_ours hopper-medium tau10-evidence "${EVIDENCE[@]}" cql.tau=10 ;;
    *) echo "unknown cell $1" >&2; return 2 ;;
  esac
}

lane=$1
while read -r cell; do
  [ -z "$cell" ] || [ "${cell:0:1}" = "#" ] && continue
  run_cell "$cell"
done < "$lane"
