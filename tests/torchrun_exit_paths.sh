#!/usr/bin/env bash
# Every way a torchrun run can end, ROUNDS times in a row (default 30): finished, stopped after
# an epoch, interrupted (SIGINT to torchrun after the first checkpoint), a usage error every rank
# meets, an error on rank 1 only. A round fails on an unexpected exit status, an abort at exit
# (gloo's "terminate called"), a connection error, a traceback from rlmix, or an error line
# printed other than once. `make torchrun-check`; about 1.5 min a round on a 2-core CPU.
set -u
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-30}
PY=${PY:-.venv/bin/python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OMP_NUM_THREADS=1 PYTHONPATH="$PWD:$PWD/tests"
T=(--no-progress --set "data.root=$WORK/data" --set "data.options={train_size: 100, test_size: 100}"
   --set data.val_size=0 --set trainer.batch_size=50 --set env.eval_every=1)
LOG=$WORK/last.log
launch() {
  exec $PY -m torch.distributed.run --nproc_per_node=2 --master_addr=127.0.0.1 \
    --master_port=$((20000 + RANDOM % 20000)) "$@"
}
broken() {  # what no exit path may print
  grep -q "terminate called\|Signals.SIGABRT\|exitcode  : -6\|Connection reset\|Connection closed\|rlmix/" "$LOG"
}
fail() { echo "FAIL $1: $2"; tail -n 40 "$LOG"; return 1; }
run() {  # expected-status label errors-expected args...
  local want=$1 label=$2 errors=$3; shift 3
  (launch "$@") >"$LOG" 2>&1
  local rc=$?
  [ $rc -eq "$want" ] || { fail "$label" "exit $rc, expected $want"; return 1; }
  broken && { fail "$label" "abort, connection error or rlmix traceback"; return 1; }
  [ "$(grep -c '^error: ' "$LOG")" = "$errors" ] || { fail "$label" "error lines"; return 1; }
  echo "ok $label"
}
interrupted() {
  (launch -m rlmix.train_agent "${T[@]}" --epochs 500 --set trainer.checkpoint_every=1 --out "$1") >"$LOG" 2>&1 &
  local pid=$!
  for _ in $(seq 1 600); do [ -f "$1/checkpoint.pt" ] && break; sleep 0.2; done
  sleep 1
  kill -INT $pid
  wait $pid
  local rc=$?
  [ $rc -ne 0 ] || { fail interrupted "exit 0: the signal did not stop it"; return 1; }
  broken && { fail interrupted "abort, connection error or rlmix traceback"; return 1; }
  [ "$(grep -c '^error: stopped by SIGINT' "$LOG")" = 1 ] || { fail interrupted "error lines"; return 1; }
  echo "ok interrupted"
}
fails=0
for i in $(seq 1 "$ROUNDS"); do
  out=$WORK/round_$i
  run 0 finished 0 -m rlmix.train_agent "${T[@]}" --epochs 1 --out "$out/finished" || fails=$((fails + 1))
  run 0 stopped 0 -m rlmix.train_agent "${T[@]}" --epochs 2 --stop-after-epoch 1 --out "$out/stopped" || fails=$((fails + 1))
  interrupted "$out/interrupted" || fails=$((fails + 1))
  run 1 usage 1 -m rlmix.train "${T[@]}" --epochs 1 --set mix.k=1 --out "$out/usage" || fails=$((fails + 1))
  run 1 rank1 1 -m rlmix.train "${T[@]}" --epochs 1 --policy rmix \
    --reward tests.reward_fixtures:fails_on_rank_1 --out "$out/rank1" || fails=$((fails + 1))
  rm -rf "$out"
  echo "round $i of $ROUNDS: $fails failures so far"
done
echo "torchrun exit paths: $ROUNDS rounds x 5 paths, $fails failures"
[ "$fails" -eq 0 ]
