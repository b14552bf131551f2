#!/bin/sh
# test_spacectl_disk.sh -- spacectl disk add/replace/retire, repair, scrub
# (and the job options checkpoint and backup share with them) on an
# unmounted pool, speaking TAP.
#
# Without a daemon: repair and scrub refuse in one line saying the pool
# must be mounted, and change nothing; disk add/replace/retire work on the
# superblock (the next mount rebuilds or moves data); bad arguments are
# refused in one line and change nothing.
set -u

SPACECTL=${SPACECTL:?set SPACECTL to the spacectl binary}
T=$(mktemp -d /tmp/spacectl-disk.XXXXXX)
trap 'rm -rf "$T"' EXIT INT TERM
export SPACEFS_RUN_DIR="$T/run" # never talk to a real daemon
mkdir -p "$T/run"
n=0
failed=0

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do printf '#   %s\n' "$l"; done; }

snapshot() {
	(cd "$T/disks" && find . -printf '%p %y %s %m\n' | LC_ALL=C sort &&
		find . -type f -exec md5sum {} + | LC_ALL=C sort)
}

refuse() {
	desc=$1 want=$2
	shift 2
	before=$(snapshot)
	"$SPACECTL" "$@" >"$T/out" 2>"$T/err"
	rc=$?
	after=$(snapshot)
	if [ "$rc" -ne 0 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -qF -- "$want" "$T/err" &&
		[ "$before" = "$after" ]; then
		ok "$desc ($(cat "$T/err"))"
	else
		not_ok "$desc" "exit $rc" "stderr: $(cat "$T/err")" "changed: $([ "$before" = "$after" ] && echo no || echo yes)"
	fi
}

accept() {
	desc=$1
	shift
	if "$SPACECTL" "$@" >"$T/out" 2>"$T/err"; then
		ok "$desc: $(head -n 1 "$T/out")"
	else
		not_ok "$desc" "stderr: $(cat "$T/err")"
	fi
}

state_of() { # DISK-INDEX -> its state in status --json
	"$SPACECTL" status "$T/disks/d0" --json |
		python3 -c "import json,sys; print(json.load(sys.stdin)['disks'][$1]['state'])"
}

mkdir -p "$T/disks/d0" "$T/disks/d1" "$T/disks/d2" "$T/disks/d3" "$T/new" "$T/extra" "$T/full"
touch "$T/full/something"
"$SPACECTL" pool create lab "$T/disks/d0" "$T/disks/d1" "$T/disks/d2" "$T/disks/d3" >/dev/null
"$SPACECTL" volume create "$T/disks/d0" m --layout mirror --copies 2 --columns 1 >/dev/null

refuse "repair needs a mounted pool" "not mounted" repair "$T/disks/d0"
refuse "scrub needs a mounted pool" "not mounted" scrub "$T/disks/d0" m --wait
refuse "scrub --rate must be a number" "--rate" scrub "$T/disks/d0" --rate fast
# options after operands, even where getopt would not permute (tools/jobopts.c)
export POSIXLY_CORRECT=1
refuse "scrub VOL --rate fast (POSIXLY_CORRECT)" "--rate" scrub "$T/disks/d0" m --rate fast
unset POSIXLY_CORRECT
refuse "backup: --rate after the operands" "--rate" backup "$T/disks/d0" m "$T/new" --rate 0
refuse "checkpoint merge: unknown option" "unknown option" checkpoint merge "$T/disks/d0" m c --frob
refuse "checkpoint list needs a mounted pool" "not mounted" checkpoint list "$T/disks/d0" m --wait
refuse "replace: unknown old disk" "not a disk" disk replace "$T/disks/d0" 9 "$T/new"
refuse "replace: new directory not empty" "not empty" disk replace "$T/disks/d0" 1 "$T/full"
refuse "replace: new directory is a member" "already disk" disk replace "$T/disks/d0" 1 "$T/disks/d2"
refuse "disk: unknown command" "unknown command" disk frobnicate "$T/disks/d0"
refuse "retire: unknown disk" "not a disk" disk retire "$T/disks/d0" /nonexistent

accept "replace disk 1 offline" disk replace "$T/disks/d0" 1 "$T/new"
s=$(state_of 1)
[ "$s" = repairing ] && ok "replaced disk is repairing" || not_ok "replaced disk is repairing" "state $s"
[ -f "$T/new/spacefs.pool" ] && ok "the new disk got a superblock" || not_ok "the new disk got a superblock"
accept "add a disk offline" disk add "$T/disks/d0" "$T/extra"
s=$(state_of 4)
[ "$s" = healthy ] && ok "added disk is healthy" || not_ok "added disk is healthy" "state $s"
accept "retire disk 3 offline" disk retire "$T/disks/d0" 3
s=$(state_of 3)
[ "$s" = retired ] && ok "retired disk shows retired" || not_ok "retired disk shows retired" "state $s"
"$SPACECTL" disk --help | grep -q "replace SOURCE OLD NEW" && ok "disk --help" || not_ok "disk --help"
"$SPACECTL" scrub --help | grep -q -- "--rate" && ok "scrub --help" || not_ok "scrub --help"

echo "1..$n"
[ "$failed" -eq 0 ]
