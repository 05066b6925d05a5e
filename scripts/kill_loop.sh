#!/usr/bin/env bash
# Kills `inkgrad train` with SIGKILL at random moments, again and again, and checks that nothing
# is lost: after every kill model.safetensors (once an epoch has been saved) loads with
# `inkgrad generate`, and `inkgrad train --resume` continues from the last saved epoch. At the
# end the run is resumed to completion and must match an uninterrupted run bit for bit
# (losses.csv and model.safetensors). Builds nothing.
#
#   scripts/kill_loop.sh [path to inkgrad, default build/apps/inkgrad]
#
# Environment: KILLS (default 20), EPOCHS (default 100), KILL_SEED (default: random, printed;
# set it to replay the same kill moments), KEEP=1 keeps the work folder, MODEL=diffusion runs the
# diffusion recipe (tiny config) instead of the MLP.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${1:-$repo/build/apps/inkgrad}"
kills_wanted="${KILLS:-20}"
epochs="${EPOCHS:-100}"
seed="${KILL_SEED:-$(( (RANDOM << 15) | RANDOM ))}"
RANDOM=$seed

if [[ ! -x "$bin" ]]; then
  echo "kill loop: $bin is not an executable; build inkgrad first or pass its path" >&2
  exit 2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/inkgrad-kill-loop.XXXXXX")"
run="$work/run"
reference="$work/reference"
# Small settings: 180 samples in 6 steps per epoch, so a checkpoint is written every ~50 ms and
# a random kill often lands inside a write.
settings=(--model mlp --samples-per-prompt 20 --batch-size 30 --seed 42 --epochs "$epochs")
# Flags that are not part of a run's settings, so every command (fresh or --resume) repeats them.
extra=()
if [[ "${MODEL:-mlp}" == diffusion ]]; then
  # The diffusion recipe at its smallest: the tiny U-Net, 36 pictures in 3 steps per epoch, no
  # preview grids and no eval at the end, so that epochs stay a fraction of a second.
  settings=(--model diffusion --config tiny --samples-per-prompt 4 --batch-size 12 --seed 42
            --epochs "$epochs")
  extra=(--preview-every 0 --eval-samples 0)
fi
threads=(--threads 1)

reference_pid=""
status=1
cleanup() {
  if [[ -n "$reference_pid" ]]; then kill -KILL "$reference_pid" 2>/dev/null || true; fi
  if [[ $status -eq 0 && "${KEEP:-0}" != 1 ]]; then
    rm -rf "$work"
  else
    echo "kill loop: files kept in $work" >&2
  fi
}
trap cleanup EXIT

fail() {
  echo "kill loop: FAIL: $*" >&2
  exit 1
}

# The uninterrupted run to compare with, trained alongside the loop.
"$bin" train --out "$reference" "${settings[@]}" "${extra[@]}" "${threads[@]}" --quiet >"$work/reference.log" 2>&1 &
reference_pid=$!

# What the run folder must hold, from what the killed processes printed. After epoch N a
# process starts writing its checkpoint in the background and prints "epoch N/..."; the write
# of epoch N+1 starts only once epoch N's files are complete. So when "epoch N" is the last line
# printed, the saved epoch is at least N-1 (N may still have been in flight) and at most N+1
# (killed between starting the save of N+1 and printing it).
lowest=0              # saved epoch >= lowest
highest=0             # saved epoch <= highest
known=1               # 0: a fresh run was killed before it recorded the run (may not resume)
model_expected=0      # 1: some process of this run printed an epoch, so model.safetensors exists

last_printed_epoch() {  # log -> the last "epoch N/..." line's N, or 0
  local n
  n="$(grep -E '^epoch +[0-9]+/' "$1" | tail -n 1 | sed -E 's/^epoch +([0-9]+)\/.*/\1/')"
  echo "${n:-0}"
}

# Checks the header of a resumed process against the expected range; sets resumed_epoch.
resumed_epoch=0
check_resumed_epoch() {  # log
  local resumed
  if grep -q '^  resuming .*no checkpoint yet' "$1"; then
    resumed=0
  else
    resumed="$(sed -n -E 's/^  resuming  .* after epoch ([0-9]+) \(loss .*/\1/p' "$1")"
    [[ -n "$resumed" ]] || fail "no 'resuming' line in $1"
  fi
  if [[ $known -eq 1 ]] && (( resumed < lowest || resumed > highest )); then
    fail "--resume continued after epoch $resumed, but the last saved epoch is in [$lowest, $highest] ($1)"
  fi
  resumed_epoch=$resumed
}

# After a process has ended: the bounds from its output. mode: fresh or resume.
update_expectations() {  # mode log
  local printed
  printed="$(last_printed_epoch "$2")"
  if [[ $1 == fresh ]]; then
    if grep -q '^  output ' "$2"; then  # config.json of the new run is written
      known=1 lowest=$((printed > 0 ? printed - 1 : 0)) highest=$((printed + 1))
      model_expected=$((printed > 1))
    else
      known=0 lowest=0 highest=0 model_expected=0
    fi
  elif grep -q '^  resuming ' "$2"; then
    check_resumed_epoch "$2"
    known=1
    local done_for_sure=$((printed > 0 ? printed - 1 : 0))
    lowest=$(( done_for_sure > resumed_epoch ? done_for_sure : resumed_epoch ))
    highest=$(( (printed > resumed_epoch ? printed : resumed_epoch) + 1 ))
    if (( lowest > 0 )); then model_expected=1; fi
  fi
  # A resumed process killed before its header wrote no checkpoint: the bounds stand.
}

# model.safetensors must load whenever it exists, and exist once an epoch is surely saved.
# Sets model_state.
loadable=0
model_state=""
check_model() {  # kill number
  local model="$run/model.safetensors"
  if [[ ! -e "$model" ]]; then
    [[ $model_expected -eq 0 ]] || fail "kill $1: $model is missing after an epoch was saved"
    model_state="no checkpoint yet"
    return
  fi
  if ! "$bin" generate --checkpoint "$model" --prompt circle -n 1 --seed 1 \
       --out "$work/check.png" >"$work/generate.log" 2>&1; then
    cat "$work/generate.log" >&2
    fail "kill $1: $model does not load"
  fi
  loadable=$((loadable + 1))
  model_state="model.safetensors loads"
}

# A resume that is killed as soon as it has said where it continues from; used to check the
# folder before a fresh run replaces it. Sets probe_state.
probe_state=""
probe_resume() {  # kill number
  local log="$work/probe-$1.log" pid rc=0
  "$bin" train --resume "$run" "${extra[@]}" "${threads[@]}" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 2000); do
    grep -q '^  resuming ' "$log" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || rc=$?
  if ! grep -q '^  resuming ' "$log"; then
    if [[ $known -eq 0 && $rc -eq 1 && $(wc -l <"$log") -eq 1 ]]; then
      probe_state="not resumable (killed before the run was recorded: $(cat "$log"))"
      return
    fi
    cat "$log" >&2
    fail "kill $1: inkgrad train --resume $run failed (exit $rc)"
  fi
  update_expectations resume "$log"
  probe_state="resume continues after epoch $resumed_epoch"
}

start=$SECONDS
kills=0
inside_writes=0
attempt=0
mode=fresh
echo "kill loop: $kills_wanted kills of $bin (KILL_SEED=$seed, $epochs epochs, work folder $work)"
while :; do
  attempt=$((attempt + 1))
  (( attempt <= 4 * kills_wanted )) || fail "only $kills kills in $attempt attempts"
  log="$work/train-$attempt.log"
  if [[ $mode == fresh ]]; then
    args=(train --out "$run" --force "${settings[@]}" "${extra[@]}" "${threads[@]}")
  else
    args=(train --resume "$run" "${extra[@]}" "${threads[@]}")
  fi
  # 10 ms to 1.5 s: one kill in four within the first 150 ms (while a fresh run replaces the
  # previous one, or a resume reloads), the others anywhere: inside writes, between epochs.
  if (( RANDOM % 4 == 0 )); then delay_ms=$(( 10 + RANDOM % 141 )); else delay_ms=$(( 50 + RANDOM % 1451 )); fi
  delay="$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
  "$bin" "${args[@]}" >"$log" 2>&1 &
  pid=$!
  sleep "$delay"
  kill -KILL "$pid" 2>/dev/null || true
  rc=0
  wait "$pid" 2>/dev/null || rc=$?  # (no "Killed" notice from the shell)

  if [[ $rc -eq 0 ]] && grep -q '^done: ' "$log"; then
    # Finished before the kill (a fast disk): nothing to check but a complete run; start again.
    [[ $mode == fresh ]] || check_resumed_epoch "$log"
    echo "  attempt $attempt: the $mode run completed before the kill after ${delay}s; starting fresh"
    mode=fresh
    continue
  fi
  if [[ $rc -ne 137 ]]; then
    if [[ $mode == resume && $known -eq 0 && $rc -eq 1 ]] && ! grep -q '^  resuming ' "$log"; then
      echo "  attempt $attempt: the killed fresh run left nothing to resume ($(head -c 200 "$log")); starting fresh"
      mode=fresh
      continue
    fi
    cat "$log" >&2
    fail "$mode run ended by itself with exit $rc before the kill after ${delay}s ($log)"
  fi
  kills=$((kills + 1))
  # A temporary file left behind means the kill landed inside an atomic write.
  in_write="$(find "$run" -maxdepth 1 -name '.*.tmp-*' -printf '%f ' 2>/dev/null | sed -E 's/\.tmp-[^ ]*//g; s/(^| )\./\1/g')"
  if [[ -n "$in_write" ]]; then
    inside_writes=$((inside_writes + 1))
  fi
  update_expectations "$mode" "$log"
  check_model "$kills"
  [[ -z "$in_write" ]] || model_state="killed while writing ${in_write% }, $model_state"
  if [[ $mode == fresh ]]; then
    echo "  kill $kills (fresh run, after ${delay}s): saved epoch in [$lowest, $highest], $model_state"
    mode=resume
  else
    echo "  kill $kills (resume, after ${delay}s): saved epoch in [$lowest, $highest], $model_state"
    # Check this kill with a resume before the next fresh run replaces the run.
    probe_resume "$kills"
    echo "    probe: $probe_state"
    mode=fresh
    if (( kills >= kills_wanted )); then break; fi
  fi
done

# Finish the interrupted run and compare it with the uninterrupted one.
"$bin" train --resume "$run" "${extra[@]}" "${threads[@]}" --quiet >"$work/final.log" 2>&1 ||
  { cat "$work/final.log" >&2; fail "the final --resume did not complete"; }
check_resumed_epoch "$work/final.log"
rc=0
wait "$reference_pid" || rc=$?
reference_pid=""
[[ $rc -eq 0 ]] || { cat "$work/reference.log" >&2; fail "the uninterrupted run failed (exit $rc)"; }
grep -q '"status": "complete"' "$run/config.json" || fail "config.json of the resumed run is not complete"
grep -q "\"epochs_completed\": $epochs," "$run/config.json" ||
  fail "config.json of the resumed run does not record $epochs epochs"
cmp "$reference/losses.csv" "$run/losses.csv" ||
  fail "losses.csv after $kills kills and resumes differs from an uninterrupted run"
cmp "$reference/model.safetensors" "$run/model.safetensors" ||
  fail "model.safetensors after $kills kills and resumes differs from an uninterrupted run"
leftovers="$(find "$run" -name '.*.tmp-*' | wc -l)"
[[ $leftovers -eq 0 ]] || fail "$leftovers temporary files were left in $run"

status=0
echo "kill loop: $kills kills ($inside_writes inside a file write), $loadable loadable" \
     "($((kills - loadable)) before the first checkpoint)," \
     "resume ok (last resume after epoch $resumed_epoch; $epochs epochs identical to an uninterrupted run)" \
     "in $((SECONDS - start))s"
