#!/usr/bin/env bash
# test-deploy.sh - deploys shoal's package with deploy/ansible on 4 booted
# Debian 12 hosts on this machine, and checks the cluster over the network
# (`make test-deploy`; needs root).
#
#   test-deploy.sh PACKAGE.deb CLI_BIN_DIR
#
# Hosts: a Debian 12 root (deploy/test-deploy-image.sh, cached) booted four
# times with systemd-nspawn, each on an overlay of the image and in its own
# network namespace; the four are joined by a bridge that lives in a namespace
# of its own, and the controller (ansible, the CLI from CLI_BIN_DIR) runs in a
# fifth. The private addresses exist only inside these namespaces, which have
# no route anywhere else. h1 runs the coordinator, h2 and h3 a shard each, h4
# two shard instances: four shards. h5, booted later, becomes the fifth.
#
# Phases (each timed), and what each proves that the others do not:
#   image, boot     the hosts (the image cached in /var/cache/shoal-test).
#   site.yml        the roles install, configure and start a cluster from
#                   nothing; the preflight warns of replicas sharing a host.
#   units           every unit active under systemd as the shoal user; every
#                   process's /readyz answers 200 and /metrics has shoal_
#                   series, scraped from the controller.
#   data            siftsmall with 2 copies of each list; recall@10 >= 0.95.
#   kill            kill -9 of a shard: systemd restarts it, no acknowledged
#                   write is lost, the repair ends, the coordinator is ready.
#   rolling_restart rolling_restart.yml under a stream of searches and
#                   writes: no failed or partial search, no failed write, the
#                   playbook really waited for repairs, every write kept.
#   upgrade         upgrade.yml to a newer package under searches: every host
#                   runs it, the coordinator's own restart is the only gap.
#   add_shard       add_shard.yml (h5 booted and added as a fifth shard under
#                   searches and writes): lists move to it, the replicas
#                   agree, the coordinator is not restarted and takes the
#                   written shard list at its next start; a second run of the
#                   coordinator's side changes nothing.
#   idempotence     a second site.yml changes nothing anywhere (h5 included,
#                   so this is also the second run of add_shard.yml's play on
#                   h5, the same role).
#   remove_shard    remove_shard.yml (h5 drained and removed under searches
#                   and writes); a second run of the coordinator's side
#                   changes nothing.
#   curve           the roles' CURVE tasks and templates on the controller:
#                   a shard and a coordinator started from their files admit
#                   exactly the listed keys (not in the cluster: `shoal
#                   check` asks shards directly, which CURVE forbids).
#   ansible-lint    deploy/ansible, production profile.
# Everything it starts is torn down on exit, also on failure; logs stay in
# build/test-deploy/logs.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: test-deploy.sh PACKAGE.deb CLI_BIN_DIR" >&2
    exit 2
fi
deb=$(realpath "$1")
cli=$(realpath "$2")/shoal
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
datasets=${SHOAL_DATASETS:-$repo/../shared/datasets}
sift=$datasets/siftsmall
# Copies of each IVF list (R) and the replicas that must hold a write before
# it is acknowledged (W): the collection is created with them, and the
# inventory's shoal_replication_factor is R. With R = 2 a shard that is down
# or restarting is bypassed, so the searches during the rolling restart and
# the upgrade must all be full answers; with W = 1 writes go on meanwhile.
replication=2
write_quorum=1

[[ $(id -u) -eq 0 ]] || { echo "test-deploy: needs root (namespaces, nspawn)" >&2; exit 1; }
for f in "$deb" "$cli" "$sift/siftsmall_base.fvecs"; do
    [[ -e $f ]] || { echo "test-deploy: missing $f" >&2; exit 1; }
done

t0=$(date +%s)
phase_start=$t0
timings=()
say() { echo "test-deploy: $*"; }
fail() { echo "test-deploy: FAILED: $*" >&2; exit 1; }
# Ends the current phase: records its duration and prints it.
phase_done() {
    local now
    now=$(date +%s)
    timings+=("$(printf '%-16s %4d s' "$1" $((now - phase_start)))")
    say "phase $1 done in $((now - phase_start)) s"
    phase_start=$now
}

# -------------------------------------------------------------------------
# Names, addresses and teardown
# -------------------------------------------------------------------------
run_id=$(( $$ % 100000 ))
ns=shoal-dt$run_id            # namespace prefix: $ns-br, $ns-ctl, $ns-h1 ...
net=10.213.0
ctl_addr=$net.2
hosts=(h1 h2 h3 h4)           # the booted hosts; h5 joins in the add_shard phase
declare -A addr=([h1]=$net.11 [h2]=$net.12 [h3]=$net.13 [h4]=$net.14 [h5]=$net.15)
base=$repo/build/test-deploy
work=$base/run-$run_id
logs=$base/logs
rm -rf "$logs"
mkdir -p "$work" "$logs"
declare -A nspawn_pid=()
client_pid=
writer_pid=
curve_pids=()

teardown() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    [[ -n $client_pid ]] && kill "$client_pid" 2>/dev/null
    [[ -n $writer_pid ]] && kill "$writer_pid" 2>/dev/null
    for p in "${curve_pids[@]}"; do kill "$p" 2>/dev/null; done
    for h in "${!nspawn_pid[@]}"; do
        ctl timeout 15 ssh "${ssh_opts[@]}" "root@${addr[$h]}" journalctl --no-pager \
            -u 'shoal-*' > "$logs/$h-journal.txt" 2>/dev/null
        kill -TERM "${nspawn_pid[$h]}" 2>/dev/null     # container powers off
    done
    for h in "${!nspawn_pid[@]}"; do
        for _ in $(seq 1 150); do kill -0 "${nspawn_pid[$h]}" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "${nspawn_pid[$h]}" 2>/dev/null
        wait "${nspawn_pid[$h]}" 2>/dev/null
    done
    for h in "${hosts[@]}"; do
        mountpoint -q "$work/$h/root" && { umount "$work/$h/root" || umount -l "$work/$h/root"; }
        ip netns del "$ns-$h" 2>/dev/null
    done
    ip netns del "$ns-ctl" 2>/dev/null
    ip netns del "$ns-br" 2>/dev/null
    rm -rf "$work"
    echo
    say "phase timings:"
    printf '  %s\n' "${timings[@]}"
    say "total $(( $(date +%s) - t0 )) s; logs in $logs"
    if [[ $rc -eq 0 ]]; then say "PASSED"; else say "FAILED (exit $rc)"; fi
    exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# Runs a command in the controller's namespace.
ctl() { ip netns exec "$ns-ctl" "$@"; }
ssh_opts=(-i "$work/id" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
          -o LogLevel=ERROR -o ConnectTimeout=5 -o BatchMode=yes)
# Runs a command on host $1 over SSH from the controller.
on() { local h=$1; shift; ctl ssh "${ssh_opts[@]}" "root@${addr[$h]}" "$@"; }
coord=tcp://${addr[h1]}:7700
shoal() { ctl "$cli" -c "$coord" "$@"; }
nshards=4

# Prints "shards shards_up" as the coordinator reports them (ping).
shards_up() {
    shoal -t 2000 ping 2>/dev/null | sed -n 's/.*"shards": \([0-9]*\), "shards_up": \([0-9]*\).*/\1 \2/p'
}
wait_all_up() {
    for _ in $(seq 1 120); do
        [[ $(shards_up) == "$nshards $nshards" ]] && return 0
        sleep 1
    done
    fail "the coordinator does not report $nshards shards up (last: $(shards_up))"
}
# Prints Python expression $1 over the coordinator's stats `s`, or over those
# of collection $2: the first line of `shoal status` (a second one says what
# moves while lists move). E.g. stats 's["moves"]["pending"]'.
stats() {
    shoal -t 5000 status ${2:+"$2"} 2>/dev/null | head -n 1 |
        python3 -c 'import json, sys; s = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"
}
# Prints "pending fenced_shards" of the coordinator's repair state (status).
repair_state() {
    stats '" ".join(str(s["repair"][k]) for k in ("pending", "fenced_shards"))'
}
# Waits until every stale replica is rebuilt and no shard is fenced.
wait_repaired() {
    for _ in $(seq 1 120); do
        [[ $(repair_state) == "0 0" ]] && { say "repair done: nothing pending, no shard fenced ($1)"; return 0; }
        sleep 1
    done
    fail "the repair does not end (pending, fenced: $(repair_state)) ($1)"
}

# -------------------------------------------------------------------------
# Phase: the host image (cached)
# -------------------------------------------------------------------------
image=$(bash "$here/test-deploy-image.sh")
phase_done image

# -------------------------------------------------------------------------
# Phase: network and hosts
# -------------------------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -f "$work/id" -C "shoal-test-deploy"
ip netns add "$ns-br"
ip -n "$ns-br" link add br0 type bridge
ip -n "$ns-br" link set br0 up
# Adds namespace $ns-$1 with eth0 on the bridge at address $2.
add_node() {
    ip netns add "$ns-$1"
    ip -n "$ns-br" link add "v-$1" type veth peer name eth0 netns "$ns-$1"
    ip -n "$ns-br" link set "v-$1" master br0 up
    ip -n "$ns-$1" addr add "$2/24" dev eth0
    ip -n "$ns-$1" link set eth0 up
    ip -n "$ns-$1" link set lo up
}
# Boots host $1 in the background: its namespace on the bridge, an overlay of
# the image, systemd-nspawn.
boot_host() {
    local h=$1 d=$work/$1
    add_node "$h" "${addr[$h]}"
    mkdir -p "$d/upper" "$d/work" "$d/root"
    mount -t overlay overlay -o "lowerdir=$image,upperdir=$d/upper,workdir=$d/work" "$d/root"
    install -d -m 0700 "$d/root/root/.ssh"
    install -m 0600 "$work/id.pub" "$d/root/root/.ssh/authorized_keys"
    echo "$h" > "$d/root/etc/hostname"
    systemd-nspawn --register=no --keep-unit --quiet -D "$d/root" -M "$h" -b \
        --network-namespace-path="/run/netns/$ns-$h" --console=passive \
        > "$logs/$h-console.log" 2>&1 &
    nspawn_pid[$h]=$!
}
# Waits until host $1 answers SSH.
wait_ssh() {
    local h=$1 i
    for i in $(seq 1 120); do
        on "$h" true 2>/dev/null && return 0
        kill -0 "${nspawn_pid[$h]}" 2>/dev/null || fail "$h did not boot (see $logs/$h-console.log)"
        sleep 1
    done
    fail "no SSH on $h after 120 s"
}
add_node ctl "$ctl_addr"
for h in "${hosts[@]}"; do
    boot_host "$h"
done
for h in "${hosts[@]}"; do
    wait_ssh "$h"
done
say "${#hosts[@]} hosts booted, SSH answers"
phase_done boot

# -------------------------------------------------------------------------
# Phase: site.yml
# -------------------------------------------------------------------------
inventory=$work/inventory.yml
# Writes the inventory; with $1 = with-h5, h5 is the last host of the shards.
write_inventory() {
    cat > "$inventory" <<EOF
all:
  vars:
    ansible_user: root
    ansible_ssh_private_key_file: $work/id
    ansible_ssh_common_args: "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
    shoal_package_file: $deb
    shoal_replication_factor: $replication
    shoal_shard_threads: 1
    shoal_coordinator_threads: 1
    shoal_coordinator_nlist: 64
    # A second between two repair steps (5 ms by default): rebuilding what a
    # restarted shard missed then takes seconds, longer than the playbook's own
    # pace, so rolling_restart.yml really has to wait for it; were it to go on,
    # the next restart would take a list's last readable copy (partial answers).
    shoal_coordinator_options: {repair-pause-ms: 1000}
    # Metrics on every process, on the hosts' own addresses (the controller
    # scrapes them; 9700 the coordinator, 9701, 9702 a host's shards): the
    # roles also wait for /readyz after every start and restart.
    shoal_coordinator_metrics_enabled: true
    shoal_coordinator_metrics_address: "{{ ansible_host }}"
    shoal_shard_metrics_enabled: true
    shoal_shard_metrics_address: "{{ ansible_host }}"
  children:
    coordinators:
      hosts:
        h1: {ansible_host: ${addr[h1]}}
    shards:
      hosts:
        h2: {ansible_host: ${addr[h2]}}
        h3: {ansible_host: ${addr[h3]}}
        h4:
          ansible_host: ${addr[h4]}
          shoal_shard_instances:
            - {name: "0", port: 7701}
            - {name: "1", port: 7702, data_dir: /srv/shoal/shard-1}
EOF
    [[ ${1:-} != with-h5 ]] || echo "        h5: {ansible_host: ${addr[h5]}}" >> "$inventory"
    cp "$inventory" "$logs/inventory.yml"
}
write_inventory
mkdir -p "$work/ansible-cp" "$work/ansible-tmp"
# Runs a playbook from the controller; output to the terminal and $logs/$1.log.
playbook() {
    local name=$1 log=$logs/$1.log
    shift
    ctl env ANSIBLE_CONFIG="$repo/deploy/ansible/ansible.cfg" ANSIBLE_HOST_KEY_CHECKING=False \
        ANSIBLE_SSH_CONTROL_PATH_DIR="$work/ansible-cp" ANSIBLE_LOCAL_TEMP="$work/ansible-tmp" \
        ANSIBLE_NOCOLOR=1 ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks ansible-playbook -i "$inventory" "$@" 2>&1 | tee "$log" |
        grep -E '^(PLAY RECAP|fatal|failed|ERROR|[a-z0-9]+ +: ok=)' || true
    grep -qE 'failed=[1-9]|unreachable=[1-9]' "$log" && fail "$name: a host failed (see $log)"
    grep -qE ': ok=' "$log" || fail "$name: no play recap (see $log)"
}
playbook site "$repo/deploy/ansible/site.yml"
# h4's two instances are shards 2 and 3: with R = 2 the coordinator puts a
# list's copies on consecutive shards, so some lists have both on h4, which
# the coordinator role's preflight must say.
grep -q "shards 2 and 3 (both on ${addr[h4]}) hold copies of the same lists" "$logs/site.log" ||
    fail "site.yml did not warn that shards 2 and 3 (h4) hold copies of the same lists"
phase_done site.yml

# -------------------------------------------------------------------------
# Phase: every unit active under systemd on its host
# -------------------------------------------------------------------------
declare -A units=([h1]=shoal-coordinator.service [h2]=shoal-shard@0.service
                  [h3]=shoal-shard@0.service [h4]="shoal-shard@0.service shoal-shard@1.service")
for h in "${hosts[@]}"; do
    for u in ${units[$h]}; do
        state=$(on "$h" systemctl is-active "$u" || true)
        [[ $state == active ]] || fail "$u on $h is $state"
        say "$h: $u active (user $(on "$h" systemctl show -p User --value "$u"))"
    done
done
[[ $(shards_up) == "$nshards $nshards" ]] || fail "shards up: $(shards_up)"
say "the coordinator reports $nshards shards, all up"
# Every process's metrics endpoint, scraped from the controller as a
# Prometheus elsewhere would: /readyz answers 200 and /metrics has shoal_
# series (docs/operations.md, Monitoring). Arguments: HOST:PORT ...
check_metrics() {
    ctl python3 - "$@" <<'PY' || fail "metrics endpoints (see above)"
import sys, urllib.request
bad = 0
for target in sys.argv[1:]:
    try:
        with urllib.request.urlopen(f"http://{target}/readyz", timeout=5) as r:
            ready = r.status
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as r:
            text = r.read().decode()
    except Exception as e:
        print(f"test-deploy: {target}: {e}"); bad += 1; continue
    series = sum(1 for l in text.splitlines() if l.startswith("shoal_"))
    role = next((l for l in text.splitlines() if l.startswith("shoal_build_info")), "no shoal_build_info")
    print(f"test-deploy: {target}: /readyz {ready}, /metrics {series} shoal_ samples ({role})")
    bad += ready != 200 or series == 0
sys.exit(1 if bad else 0)
PY
}
check_metrics "${addr[h1]}:9700" "${addr[h2]}:9701" "${addr[h3]}:9701" "${addr[h4]}:9701" "${addr[h4]}:9702"
phase_done units

# -------------------------------------------------------------------------
# Phase: create, train and load siftsmall through the CLI; recall@10
# -------------------------------------------------------------------------
shoal create sift --dim 128 --metric l2 --nlist 64 --replication "$replication" \
    --write-quorum "$write_quorum"
shoal train sift "$sift/siftsmall_base.fvecs" > "$logs/train.txt"
shoal load sift "$sift/siftsmall_base.fvecs" --batch 2000 2>/dev/null
# Checks recall@10 on the query set against the ground truth; $1 names the moment.
check_recall() {
    local out recall
    out=$(shoal search sift "$sift/siftsmall_query.fvecs" -k 10 --gt "$sift/siftsmall_groundtruth.ivecs")
    say "search ($1): $out"
    [[ $out != *partial=1* ]] || fail "partial answer $1"
    recall=$(sed -n 's/.*recall@10=\([0-9.]*\).*/\1/p' <<< "$out")
    awk -v r="$recall" 'BEGIN { exit !(r >= 0.95) }' || fail "recall@10 $recall < 0.95 ($1)"
}
check_recall "after load"
count() { shoal status sift | sed -n 's/.*"count": \([0-9]*\).*/\1/p'; }
[[ $(count) == 10000 ]] || fail "count $(count), expected 10000"
[[ $(shoal status sift) == *'"replication": '$replication', "write_quorum": '$write_quorum,* ]] ||
    fail "the collection does not report replication $replication, write_quorum $write_quorum"
phase_done data

# -------------------------------------------------------------------------
# Phase: kill -9 a shard through systemd; it is restarted, nothing is lost
# -------------------------------------------------------------------------
# 100 more vectors (ids 1000000..1000099), acknowledged before the kill: a
# generated set far from SIFT's, so that they never enter the queries' top 10.
ctl "$(dirname "$cli")/shoal-bench" gen --n 100 --dim 128 --queries 1 --k 1 --seed 7 \
    --out "$work/extra" > /dev/null
shoal load sift "$work/extra/base.fvecs" --ids-start 1000000 2>/dev/null
extra_ids=$(seq -s, 1000000 1000099)
expected_count=10100
check_extra() {
    local found
    found=$(shoal get sift --ids "$extra_ids" | grep -c ' found=1 ' || true)
    [[ $found == 100 ]] || fail "$found of 100 acknowledged vectors found ($1)"
    [[ $(count) == "$expected_count" ]] || fail "count $(count), expected $expected_count ($1)"
    say "all 100 acknowledged vectors present, count $expected_count ($1)"
}
check_extra "before the kill"
restarts=$(on h2 systemctl show -p NRestarts --value shoal-shard@0.service)
# Only the main process: in an nspawn host without a delegated cgroup tree,
# systemd cannot signal a unit's whole cgroup ("auxiliary processes: EIO").
on h2 systemctl kill --kill-who=main -s KILL shoal-shard@0.service
for i in $(seq 1 60); do
    now=$(on h2 systemctl show -p NRestarts --value shoal-shard@0.service)
    state=$(on h2 systemctl is-active shoal-shard@0.service || true)
    [[ $now -gt $restarts && $state == active ]] && break
    [[ $i -lt 60 ]] || fail "systemd did not restart shoal-shard@0 on h2 (NRestarts $now, $state)"
    sleep 1
done
say "systemd restarted shoal-shard@0 on h2 after SIGKILL (NRestarts $restarts -> $now)"
wait_all_up
wait_repaired "after the kill"
check_extra "after the kill"
check_recall "after the kill"
# Ready now means every list of sift has a readable replica again.
check_metrics "${addr[h1]}:9700"
phase_done kill

# -------------------------------------------------------------------------
# Phase: rolling_restart.yml while clients search and write continuously
# -------------------------------------------------------------------------
# The searching client: 100 queries per run in requests of 10, over and over;
# counts requests, failed runs and partial answers until told to stop. The
# coordinator's deadline (3 s) is below the client's wait (5 s), so a reply
# that never comes means the coordinator itself was gone.
search_loop() {
    local runs=0 failed=0 partial=0 out
    while [[ ! -e $work/stop-clients ]]; do
        runs=$((runs + 1))
        if out=$(shoal -t 5000 search sift "$sift/siftsmall_query.fvecs" -k 10 --batch 10 \
                --deadline-ms 3000 2>&1); then
            if [[ $out == *partial=1* ]]; then
                partial=$((partial + 1))
                echo "$out" >> "$logs/search-partial.txt"
            fi
        else
            failed=$((failed + 1))
            echo "$out" >> "$work/search-failures"
        fi
    done
    echo "$runs $failed $partial" > "$work/search-counts"
}
# The writing client: every half second, the next 10 rows of siftsmall's base
# (spread over all the lists, so every shard misses writes while it restarts)
# under fresh ids from 2000000 on; the acknowledged ids go to $work/written,
# the failures to $logs/write-failures.txt. The copies are deleted once
# checked: they would tie with the originals in the recall check.
write_loop() {
    local next=2000000 batches=0 failed=0 out row_bytes=$((4 + 128 * 4))
    : > "$work/written"
    while [[ ! -e $work/stop-clients ]]; do
        dd if="$sift/siftsmall_base.fvecs" of="$work/batch.fvecs" bs=$((10 * row_bytes)) \
            skip=$((batches % 1000)) count=1 status=none
        batches=$((batches + 1))
        if out=$(shoal -t 30000 load sift "$work/batch.fvecs" --ids-start "$next" 2>&1); then
            seq "$next" $((next + 9)) >> "$work/written"
        else
            failed=$((failed + 1))
            echo "ids $next..$((next + 9)): $out" >> "$logs/write-failures.txt"
        fi
        next=$((next + 10))
        sleep 0.5
    done
    echo "$batches $failed" > "$work/write-counts"
}
# Runs playbook $2 (args after it) under the searching client, and under the
# writing one when $1 is "writes"; prints the counts and checks them: with
# R >= 2 no search fails or is partial and no write fails. The one exception
# is upgrade.yml's restart of the coordinator itself (there is one): searches
# in flight then get no reply from it, and those failures are counted apart.
under_clients() {
    local writes=$1 name=$2 runs failed partial batches wfailed coord_failed=0
    shift 2
    rm -f "$work/stop-clients" "$work/search-counts" "$work/write-counts" "$work/search-failures"
    search_loop &
    client_pid=$!
    [[ $writes == writes ]] && { write_loop & writer_pid=$!; }
    playbook "$name" "$@"
    touch "$work/stop-clients"
    wait "$client_pid"
    client_pid=
    if [[ -n $writer_pid ]]; then
        wait "$writer_pid"
        writer_pid=
        read -r batches wfailed < "$work/write-counts"
        say "$name under writes: $batches batches of 10 vectors, $wfailed failed"
        [[ $wfailed -eq 0 ]] || fail "$name: $wfailed failed writes with R = $replication, W = $write_quorum (see $logs/write-failures.txt)"
    fi
    read -r runs failed partial < "$work/search-counts"
    if [[ -e $work/search-failures ]]; then
        cat "$work/search-failures" >> "$logs/search-failures.txt"
        [[ $name == upgrade ]] &&
            coord_failed=$(grep -c "no reply from $coord within" "$work/search-failures" || true)
    fi
    say "$name under searches: $((runs * 10)) requests ($runs runs of 100 queries)," \
        "$failed failed runs ($coord_failed while the coordinator restarted)," \
        "$partial runs with partial answers (R = $replication)"
    [[ $((failed - coord_failed)) -eq 0 && $partial -eq 0 ]] ||
        fail "$name: $failed failed and $partial partial search runs with R = $replication" \
            "(see $logs/search-failures.txt and search-partial.txt)"
}
# Checks that the writing client's acknowledged vectors (of its last run) are
# all there ($2 = present) or all gone ($2 = deleted).
check_written() {
    local n found want
    n=$(wc -l < "$work/written")
    [[ $n -gt 0 ]] || fail "no write was acknowledged by the writing client ($1)"
    found=$(shoal get sift --ids "$work/written" | grep -c ' found=1 ' || true)
    want=$n
    [[ $2 == deleted ]] && want=0
    [[ $found == "$want" ]] || fail "$found of $n vectors written by the writing client found, expected $want ($1)"
    say "$found of $n vectors written by the writing client found, as expected ($1)"
}
# After a phase under writes ($1 names it): every written row and the 100
# extra ones are there, then the written ones are deleted again (they would
# tie with the originals in the recall check) and stay gone.
drop_written() {
    local deleted
    expected_count=$((10100 + $(wc -l < "$work/written")))
    check_written "after $1" present
    check_extra "after $1"
    deleted=$(shoal delete sift --ids "$work/written")
    [[ $deleted == "deleted=$(wc -l < "$work/written")" ]] || fail "delete of the written vectors: $deleted"
    expected_count=10100
    check_written "after their delete" deleted
    check_extra "after the delete"
}
under_clients writes rolling_restart "$repo/deploy/ansible/rolling_restart.yml"
# The slowed repair (repair-pause-ms) exists so that the playbook has to
# wait for it: a run where no poll found one going would not test that wait.
repair_polls=$(grep -c 'RETRYING: .*no stale replica and no fenced shard' "$logs/rolling_restart.log" || true)
say "rolling_restart: $repair_polls polls of the coordinator found the repair still going"
[[ $repair_polls -gt 0 ]] || fail "rolling_restart.yml never found a repair going: its wait for the repair went untested"
for h in h2 h3 h4; do
    for u in ${units[$h]}; do
        [[ $(on "$h" systemctl is-active "$u" || true) == active ]] || fail "$u on $h not active after the restart"
    done
done
wait_all_up
# The playbook waited for the repair after each restart: nothing is left.
[[ $(repair_state) == "0 0" ]] ||
    fail "after the rolling restart the repair is not done (pending, fenced: $(repair_state))"
say "after the rolling restart: nothing pending, no shard fenced"
drop_written "the rolling restart"
check_recall "after the rolling restart"
phase_done rolling_restart

# -------------------------------------------------------------------------
# Phase: upgrade.yml to a newer package (the same programs, version + 1)
# -------------------------------------------------------------------------
old_version=$(dpkg-deb -f "$deb" Version)
new_version=$old_version.1
dpkg-deb -R "$deb" "$work/newpkg"
sed -i "s/^Version: .*/Version: $new_version/" "$work/newpkg/DEBIAN/control"
new_deb=$work/shoal_${new_version}_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$work/newpkg" "$new_deb" > /dev/null
under_clients searches upgrade "$repo/deploy/ansible/upgrade.yml" -e "shoal_package_file=$new_deb"
for h in "${hosts[@]}"; do
    v=$(on "$h" "dpkg-query -W -f '\${Version}' shoal")
    [[ $v == "$new_version" ]] || fail "$h has shoal $v after the upgrade, expected $new_version"
done
say "every host runs shoal $new_version"
wait_all_up
wait_repaired "after the upgrade"
check_written "after the upgrade" deleted
check_extra "after the upgrade"
check_recall "after the upgrade"
phase_done upgrade

# -------------------------------------------------------------------------
# Phase: add_shard.yml: h5 joins as a fifth shard, under searches and writes
# -------------------------------------------------------------------------
# Fails unless the run of playbook $1 (its log) reports changed=0 on every host.
check_unchanged() {
    if grep -E ': ok=' "$logs/$1.log" | grep -qE 'changed=[1-9]'; then
        grep -E ': ok=' "$logs/$1.log"
        fail "the $1 run changed something (see $logs/$1.log)"
    fi
    say "$1: changed=0 on every host"
}
# Checks, $1 naming the moment, that the lists have stopped moving (no move
# queued or running, no old copy left to drop, none given up), that the
# coordinator ran throughout (its uptime went on from $uptime_before) and
# that the copies of every list agree (`shoal check` asks each shard for its
# per-list counts: 2 x 10,100 vectors in all).
check_moved() {
    local moves uptime out
    moves=$(stats '" ".join(str(s["moves"][k]) for k in ("pending", "running", "orphans", "aborted"))')
    [[ $moves == "0 0 0 0" ]] || fail "moves pending, running, orphans, aborted: $moves ($1)"
    say "moves: none pending, running or aborted, no old copy left; $(stats 's["moves"]["done"]') done" \
        "since the coordinator started ($1)"
    uptime=$(stats 's["uptime_s"]')
    awk -v a="$uptime" -v b="$uptime_before" 'BEGIN { exit !(a > b) }' ||
        fail "the coordinator restarted (uptime $uptime s, $uptime_before s before) ($1)"
    out=$(shoal check sift) || fail "shoal check sift: $out ($1)"
    [[ $out == *" differ=0 stale=0 vectors=$((2 * 10100))" ]] || fail "shoal check sift: $out ($1)"
    say "shoal check sift: $out ($1)"
}
# The shard list add_shard.yml and remove_shard.yml write into h1's
# coordinator.conf is for the coordinator's next start: it must take it.
# Restarted here (no client runs), it must report the shards, all up, and the
# same placement ($1 names the moment).
restart_coordinator() {
    local before
    before=$(shard_share 4)
    on h1 systemctl restart shoal-coordinator.service
    wait_all_up
    wait_repaired "the coordinator restarted $1"
    [[ $(shard_share 4) == "$before" ]] || fail "shard 4 holds $(shard_share 4), $before before the restart ($1)"
    say "the coordinator restarted with the shard list written $1: $nshards shards up, placement kept"
}
# The vectors and lists that shard $1 (its index) holds of sift's 128 replicas.
shard_share() {
    stats '"%d %d" % (s["collections"]["sift"]["shard_counts"]["'"$1"'"], s["collections"]["sift"]["shard_lists"]["'"$1"'"])' sift
}
# A new host, booted now, at the end of the inventory's shards. add_shard.yml
# installs and starts its instance, adds it to the coordinator (the shard
# list in h1's coordinator.conf gets its endpoint, the coordinator is not
# restarted) and moves lists to it.
h5_ep=tcp://${addr[h5]}:7701
hosts+=(h5)
boot_host h5
wait_ssh h5
write_inventory with-h5
on h1 cat /etc/shoal/coordinator.conf > "$work/coordinator.conf.before"
uptime_before=$(stats 's["uptime_s"]')
under_clients writes add_shard "$repo/deploy/ansible/add_shard.yml" -e shoal_add_hosts=h5 \
    -e "shoal_package_file=$new_deb"
say "add_shard: $(grep -m 1 -o '"moves=[^"]*' "$logs/add_shard.log" | tr -d '"') (the dry run)"
nshards=5
[[ $(on h5 systemctl is-active shoal-shard@0.service || true) == active ]] ||
    fail "shoal-shard@0 on h5 is not active after add_shard.yml"
check_metrics "${addr[h5]}:9701"
wait_all_up
[[ $(stats 's["shards"]["'"$h5_ep"'"]["role"]') == live ]] || fail "$h5_ep is not a live shard"
on h1 "grep -qx 'shards = .*,$h5_ep' /etc/shoal/coordinator.conf" ||
    fail "h1's coordinator.conf does not end its shard list with $h5_ep"
drop_written "add_shard.yml"
check_moved "after add_shard.yml"
read -r h5_vectors h5_lists <<< "$(shard_share 4)"
[[ $h5_lists -gt 0 && $h5_vectors -gt 0 ]] || fail "h5 (shard 4) holds $h5_lists lists after add_shard.yml"
say "h5 (shard 4) holds $h5_lists of sift's 128 list replicas, $h5_vectors vectors"
check_recall "after add_shard.yml"
restart_coordinator "after add_shard.yml"
# A second run changes nothing. Its play on h5 is the shoal_shard role, run
# again by the second site.yml below (h5 in the inventory): here only the
# coordinator's side, which site.yml never runs (a shard already in the
# registry, the dry run planning no move, the same shard list).
playbook add_shard-again "$repo/deploy/ansible/add_shard.yml" -e shoal_add_hosts=h5 \
    -e "shoal_package_file=$new_deb" --limit h1,localhost
check_unchanged add_shard-again
phase_done add_shard

# -------------------------------------------------------------------------
# Phase: a second site.yml changes nothing (with the upgraded package, and h5)
# -------------------------------------------------------------------------
playbook site-again "$repo/deploy/ansible/site.yml" -e "shoal_package_file=$new_deb"
check_unchanged site-again
phase_done idempotence

# -------------------------------------------------------------------------
# Phase: remove_shard.yml: h5 drained and removed, under searches and writes
# -------------------------------------------------------------------------
# Its lists move to the four others, it leaves the registry, h1's
# coordinator.conf is the four-shard one again (the coordinator is not
# restarted), its instance is stopped and disabled.
uptime_before=$(stats 's["uptime_s"]')
under_clients writes remove_shard "$repo/deploy/ansible/remove_shard.yml" -e shoal_remove_hosts=h5 \
    -e "shoal_package_file=$new_deb"
nshards=4
wait_all_up
[[ $(stats 's["shards"]["'"$h5_ep"'"]["role"]') == removed ]] || fail "$h5_ep is not removed"
[[ $(on h5 systemctl is-active shoal-shard@0.service || true) == inactive &&
   $(on h5 systemctl is-enabled shoal-shard@0.service || true) == disabled ]] ||
    fail "shoal-shard@0 on h5 is still active or enabled after remove_shard.yml"
on h1 cat /etc/shoal/coordinator.conf | cmp -s - "$work/coordinator.conf.before" ||
    fail "h1's coordinator.conf after remove_shard.yml differs from the one before add_shard.yml"
say "h5 removed: its unit stopped and disabled, h1's coordinator.conf as before add_shard.yml"
drop_written "remove_shard.yml"
check_moved "after remove_shard.yml"
[[ $(shard_share 4) == "0 0" ]] || fail "h5 (shard 4) still holds vectors, lists: $(shard_share 4)"
check_recall "after remove_shard.yml"
restart_coordinator "after remove_shard.yml"
[[ $(stats 's["shards"]["'"$h5_ep"'"]["role"]') == removed ]] || fail "$h5_ep is not removed after the restart"
# A second run of the coordinator's side changes nothing (nothing left to
# drain or remove, the dry run plans no move, the same shard list); the play
# on h5 only asks systemd for a stopped, disabled unit, checked above.
playbook remove_shard-again "$repo/deploy/ansible/remove_shard.yml" -e shoal_remove_hosts=h5 \
    -e "shoal_package_file=$new_deb" --limit h1,localhost
check_unchanged remove_shard-again
write_inventory
phase_done remove_shard

# -------------------------------------------------------------------------
# Phase: CURVE, through the roles' own tasks and templates, on the controller
# -------------------------------------------------------------------------
# Not in the cluster above: its shards would admit the coordinator only, and
# `shoal check` (which the add and remove phases rely on) asks them directly.
# Instead deploy/ansible/tests/curve_local.yml runs the roles' CURVE tasks
# and renders their configuration templates into $work/curve (connection
# local, in the controller's namespace), and a shard and a coordinator are
# started from exactly those files. Asserted: the roles' CLI key gets in and
# sees the shard up through CURVE shard links; a listed client gets in; no
# key does not; a client whose certificate was admitted before the run but is
# no longer listed is removed by it and does not get in; a client cannot
# reach the shard, only the coordinator's key can; the secret files are mode
# 0600. (One run: a second, for idempotence, would cost as much again; the
# cluster's second site.yml checks the roles' idempotence with CURVE off.)
bindir=$(dirname "$cli")
cdir=$work/curve
mkdir -p "$cdir/keys" "$cdir/etc" "$cdir/data"
for k in coordinator shard cli app1 stranger; do
    ctl "$cli" keygen "$cdir/keys/$k" > /dev/null
done
cat > "$cdir/inventory.yml" <<EOF
all:
  hosts:
    localhost:
      ansible_connection: local
      ansible_python_interpreter: /usr/bin/python3
      shoal_config_dir: $cdir/etc
      shoal_data_root: $cdir/data
      shoal_user: root
      shoal_group: root
      shoal_curve_enabled: true
      shoal_curve_keys_dir: $cdir/keys
      shoal_curve_client_certs: [$cdir/keys/app1]
      shoal_coordinator_cli_profile: $cdir/etc/shoal-curve.sh
      shoal_shard_instances: [{name: "0", port: 7701}]
      shoal_shard_bind_address: 127.0.0.1
      shoal_shard_threads: 1
      shoal_coordinator_bind_address: 127.0.0.1
      shoal_coordinator_threads: 1
      shoal_coordinator_shards: [tcp://127.0.0.1:7701]
EOF
# A client admitted by an earlier run and since taken out of the list.
install -d "$cdir/etc/curve/clients"
install -m 0644 "$cdir/keys/stranger" "$cdir/etc/curve/clients/stranger"
inventory=$cdir/inventory.yml playbook curve "$repo/deploy/ansible/tests/curve_local.yml"
[[ ! -e $cdir/etc/curve/clients/stranger ]] || fail "CURVE: a certificate no longer listed is still admitted"
for f in shard_secret coordinator_secret cli_secret; do
    [[ $(stat -c %a "$cdir/etc/curve/$f") == 600 ]] || fail "$f has mode $(stat -c %a "$cdir/etc/curve/$f"), not 0600"
done
grep -q '^curve-secret-key = ' "$cdir/etc/coordinator.conf" || fail "coordinator.conf has no CURVE key"
# Started with ip netns exec itself, not through ctl: a backgrounded function is a
# subshell, and killing its pid would leave the server running after the test.
ip netns exec "$ns-ctl" "$bindir/shoal-shard" --config "$cdir/etc/shard-0.conf" \
    --ready-file "$cdir/shard.ready" > "$logs/curve-shard.log" 2>&1 &
curve_pids+=($!)
ip netns exec "$ns-ctl" "$bindir/shoal-coordinator" --config "$cdir/etc/coordinator.conf" \
    --ready-file "$cdir/coordinator.ready" > "$logs/curve-coordinator.log" 2>&1 &
curve_pids+=($!)
# The CLI with key $1 and server key $2 (a file in $cdir/etc/curve), then its arguments.
curve_shoal() {
    local key=$1 server=$2
    shift 2
    ctl "$cli" --curve-key "$key" --curve-server-key "$cdir/etc/curve/$server" "$@"
}
# As the roles call it (shoal_cli_environment): the CLI's key from the environment.
for _ in $(seq 1 30); do
    out=$(ctl env SHOAL_CURVE_KEY="$cdir/etc/curve/cli_secret" SHOAL_CURVE_SERVER_KEY="$cdir/etc/curve/coordinator" \
        "$cli" -c tcp://127.0.0.1:7700 -t 2000 ping 2>&1) && [[ $out == *'"shards_up": 1'* ]] && break
    sleep 1
done
[[ $out == *'"shards_up": 1'* ]] || fail "CURVE: the CLI's key does not see the shard up through the coordinator: $out"
say "CURVE: the CLI's key gets in, the coordinator reaches its shard over CURVE"
curve_shoal "$cdir/keys/app1_secret" coordinator -c tcp://127.0.0.1:7700 -t 3000 ping > /dev/null ||
    fail "CURVE: a listed client (app1) is refused"
! ctl "$cli" -c tcp://127.0.0.1:7700 -t 1500 ping > /dev/null 2>&1 || fail "CURVE: a client without a key got in"
! curve_shoal "$cdir/keys/stranger_secret" coordinator -c tcp://127.0.0.1:7700 -t 1500 ping > /dev/null 2>&1 ||
    fail "CURVE: a client no longer listed got in"
! curve_shoal "$cdir/etc/curve/cli_secret" shard -c tcp://127.0.0.1:7701 -t 1500 ping > /dev/null 2>&1 ||
    fail "CURVE: a client reached the shard directly"
curve_shoal "$cdir/etc/curve/coordinator_secret" shard -c tcp://127.0.0.1:7701 -t 3000 ping > /dev/null ||
    fail "CURVE: the coordinator's key does not reach the shard"
say "CURVE: a listed client gets in; no key, a key no longer listed, a client at the shard do not"
kill "${curve_pids[@]}" 2>/dev/null
wait "${curve_pids[@]}" 2>/dev/null || true
curve_pids=()
phase_done curve

# -------------------------------------------------------------------------
# Phase: ansible-lint (Debian's) on deploy/ansible
# -------------------------------------------------------------------------
(cd "$repo/deploy/ansible" && ANSIBLE_NOCOLOR=1 ansible-lint --nocolor) > "$logs/ansible-lint.log" 2>&1 ||
    { cat "$logs/ansible-lint.log"; fail "ansible-lint"; }
tail -n 1 "$logs/ansible-lint.log"
phase_done ansible-lint
