#!/usr/bin/env bash
# End to end, in a real terminal: the real `aitk-tui` in tmux, driven by keys only.
#
#   1. creates a project on the tiny model through the wizard and starts the fine-tune: the data
#      is a local file with its own column names (prompt/completion), a max length that cuts
#      every row is refused first;
#   2. kills the app mid-job, relaunches it, and finds the job still running;
#   3. waits for the loss chart and "succeeded" (fine-tune, then export and evaluate), then
#      watches the idle Jobs pane for 60 s: the terminal must receive no byte (tmux pipe-pane);
#   4. asks the chat a training question and sees the tuned answer; quits.
#
# Runs one real fine-tune (~30-40 s on 2 cores) and export (~15 s), and the 60 s watch. Needs tmux.
# Usage: tests/e2e_tmux.sh            (AITK_TUI=path/to/aitk-tui to test another build)
# On failure the last screen is printed and the scratch folder is kept.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${AITK_TUI:-$PWD/.venv/bin/aitk-tui}
command -v tmux >/dev/null || { echo "e2e: tmux is not installed" >&2; exit 2; }
[ -x "$BIN" ] || { echo "e2e: $BIN not found (make install)" >&2; exit 2; }

ROOT=$(mktemp -d "${TMPDIR:-/tmp}/aitk-e2e.XXXXXX")
export AITK_DATA_DIR=$ROOT/data AITK_CONFIG_DIR=$ROOT/config AITK_CACHE_DIR=$ROOT/cache
export AITK_PROJECTS_DIR=$ROOT/projects AITK_LOCAL_SLOTS=1 HF_HUB_OFFLINE=1 TERM=xterm-256color
mkdir -p "$AITK_PROJECTS_DIR"
SOCK=aitk-e2e-$$
T0=$(date +%s)

tm() { tmux -L "$SOCK" "$@"; }
screen() { tm capture-pane -p -t e2e 2>/dev/null || true; }
say() { printf '[e2e %3ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
fail() {
  say "FAIL: $*"
  echo "----- last screen -----"; screen; echo "-----------------------"
  echo "scratch kept in $ROOT"
  tm kill-server 2>/dev/null || true
  exit 1
}
cleanup() { tm kill-server 2>/dev/null || true; }
trap cleanup EXIT

launch() {
  tm new-session -d -s e2e -x 120 -y 40 "$BIN"
}
wait_for() {  # wait_for SECONDS REGEX [what]: until the screen matches
  local limit=$1 pattern=$2 what=${3:-$2} end=$(($(date +%s) + $1))
  while [ "$(date +%s)" -lt "$end" ]; do
    if screen | grep -Eq -- "$pattern"; then return 0; fi
    sleep 0.3
  done
  fail "no '$what' on screen after ${limit}s"
}
keys() { tm send-keys -t e2e "$@"; sleep 0.4; }  # a human pace: the app settles between keys

# --- 1. wizard, by keys alone -------------------------------------------------------------------
launch
wait_for 30 "No projects yet" "the empty Projects pane"
say "app up; opening the wizard"
keys C-n
wait_for 10 "Project name" "wizard step 1"
keys C-u
keys -l "e2e-demo"
wait_for 5 "Creates .*e2e-demo" "the destination preview"
keys Enter
wait_for 15 "Base model to fine-tune" "wizard step 2 (model)"
wait_for 15 "tiny .*fits" "the catalog with the tiny model"
keys C-n
wait_for 10 "Text template" "wizard step 3 (dataset)"
wait_for 20 "300 rows" "the dataset check"
# A dataset with its own column names, chosen by keys (focus starts on the source choice; Tab
# goes to the path, then the eval path, the template and the max length). First a file whose
# rows are all longer than the max length: refused, the wizard stays on this step.
DATA=$ROOT/mydata; mkdir -p "$DATA"
for split in train eval; do
  sed 's/"question":/"prompt":/; s/"answer":/"completion":/' "core/data/tiny_qa/$split.jsonl" > "$DATA/$split.jsonl"
done
long=$(printf 'zebra %.0s' $(seq 40))
for i in 1 2 3; do printf '{"prompt": "q%s", "completion": "%s"}\n' "$i" "$long"; done > "$DATA/long.jsonl"
keys Right
keys Space
keys Tab
keys -l "$DATA/long.jsonl"
keys Tab Tab C-u
keys -l '<|user|>\n{prompt}<|end|>\n<|assistant|>\n{completion}<|end|>'
keys Tab C-u
keys -l "16"
wait_for 20 "cuts every row" "the every-row cut refused"
keys C-n
sleep 0.5
screen | grep -q "Text template" || fail "the wizard left the dataset step with every row cut"
keys BTab BTab BTab C-u
keys -l "$DATA/train.jsonl"
keys Tab
keys -l "$DATA/eval.jsonl"
keys Tab Tab C-u
keys -l "128"
wait_for 20 "train.jsonl: 300 rows · columns: prompt, completion" "the prompt/completion data checked"
wait_for 10 "no row cut" "the max length verdict"
say "own column names (prompt/completion) accepted; every-row cut refused"
keys C-n
wait_for 15 "Memory" "wizard step 4 (training)"
keys C-n
wait_for 10 "This machine:" "wizard step 5 (target)"
keys C-n
wait_for 10 "Equivalent commands" "wizard step 6 (summary)"
screen | grep -q "aitk project new .*e2e-demo" || fail "the summary shows no aitk command"
keys C-n
say "creating the project and starting the fine-tune"
wait_for 90 "● running +fine-tune +e2e-demo" "the fine-tune running in the Jobs pane"
[ -f "$AITK_PROJECTS_DIR/e2e-demo/aitk.toml" ] || fail "no project folder written"

# --- 2. kill the app mid-job, relaunch, the job is still running ----------------------------------
say "killing the app mid-job"
tm kill-server
sleep 1
launch
wait_for 30 "Projects F2" "the relaunched app"
keys F3
wait_for 20 "● running +fine-tune +e2e-demo" "the job still running after a relaunch"
say "job still running after the relaunch"

# --- 3. loss chart, then success of fine-tune, export and evaluate ------------------------------
wait_for 120 "Loss +━ train" "the loss chart"
say "loss chart drawn"
wait_for 600 "✔ succeeded +fine-tune +e2e-demo" "the fine-tune succeeded"  # a loaded machine: 2 cores shared
say "fine-tune succeeded; waiting for export and evaluation"
wait_for 300 "✔ succeeded +export +e2e-demo" "the export succeeded"
wait_for 120 "no jobs running" "all jobs finished"
screen | grep -Eq "✔ succeeded +evaluate +e2e-demo" || fail "the evaluation did not succeed"
grep -q '{completion}' "$AITK_PROJECTS_DIR/e2e-demo/aitk.toml" || fail "the project does not use the file's columns"

# --- 3b. an idle Jobs pane sends nothing for 60 s ------------------------------------------------
sleep 9  # the last toasts (4 s; errors 8 s) go
tm pipe-pane -t e2e "cat > '$ROOT/idle.bytes'"
sleep 60
tm pipe-pane -t e2e
idle=$(wc -c < "$ROOT/idle.bytes")
[ "$idle" -eq 0 ] || fail "the idle Jobs pane sent $idle bytes in 60 s"
say "idle Jobs pane: 0 bytes in 60 s"

# --- 4. chat with the tuned model --------------------------------------------------------------
keys F4
wait_for 20 "e2e-demo · fp32" "the exported model in the chat pane"
wait_for 30 "model ready" "the model loaded"
# The tuned model knows ~85% of the training facts (CPU float noise flips a few from run to run):
# ask up to three, each in a new chat as it was trained, and pass on the first right answer.
right=""
for qa in "What colour is a Touxkru bird?|Glodan" "Who invented the Brounshan?|Kounglour" \
          "What does a Sherdro eat?|Petais"; do
  keys C-l
  keys -l "${qa%%|*}"
  keys Enter
  wait_for 30 "tok/s" "the reply's tokens/s figure"
  if screen | grep -Eq -- "${qa##*|}\."; then right=${qa##*|}; break; fi
  say "answer to '${qa%%|*}' was not ${qa##*|}.; next question"
done
[ -n "$right" ] || fail "the tuned model answered none of three training questions"
say "tuned answer seen ($right.)"
keys C-q
end=$(($(date +%s) + 10))
while tm has-session -t e2e 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 0.2; done
tm has-session -t e2e 2>/dev/null && fail "the app did not quit on ctrl+q"
rm -rf "$ROOT"
say "PASS"
