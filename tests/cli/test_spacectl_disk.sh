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

# Journal disks (--usage journal): bad values refused in one line, nothing
# changed; a journal disk is fine on a pool without parity volumes, shows
# in status and disk list, makes the superblock version 3, and holds no
# data: a parity volume too wide for the data disks is refused.
mkdir -p "$T/jd" "$T/jd2" "$T/p2/a" "$T/p2/b" "$T/p2/c" "$T/p2/j"
refuse "add --usage: bad value" "--usage wants data or journal, not 'fast'" disk add "$T/disks/d0" "$T/jd" --usage fast
refuse "add --usage: missing value" "--usage wants data or journal" disk add "$T/disks/d0" "$T/jd" --usage
refuse "add --usage=: empty value" "not ''" disk add "$T/disks/d0" "$T/jd" --usage=
accept "add a journal disk to a pool without parity volumes" disk add "$T/disks/d0" "$T/jd" --usage journal
grep -q "as a journal disk" "$T/out" && ok "disk add says it is a journal disk" || not_ok "disk add says it is a journal disk" "$(cat "$T/out")"
u=$("$SPACECTL" status "$T/disks/d0" --json | python3 -c "import json,sys; print(' '.join(d['usage'] for d in json.load(sys.stdin)['disks']))")
[ "$u" = "data data data data data journal" ] && ok "status --json: usage of every disk" || not_ok "status --json: usage of every disk" "$u"
"$SPACECTL" disk list "$T/disks/d0" | grep -E "^ *5 .* journal " >/dev/null && ok "disk list shows the journal disk" || not_ok "disk list shows the journal disk" "$("$SPACECTL" disk list "$T/disks/d0")"
v=$(od -An -tu4 -j8 -N4 "$T/jd/spacefs.pool" | tr -d ' ')
[ "$v" = 3 ] && ok "a pool with a journal disk is format version 3" || not_ok "a pool with a journal disk is format version 3" "version $v"
accept "add a data disk with -u data" disk add "$T/disks/d0" "$T/jd2" -u data
"$SPACECTL" pool create two "$T/p2/a" "$T/p2/b" "$T/p2/c" >/dev/null
"$SPACECTL" disk add "$T/p2/a" "$T/p2/j" --usage journal >/dev/null
refuse "parity 4 columns on 3 data disks + 1 journal disk" "has 3 data" volume create "$T/p2/a" v --layout parity --columns 4
accept "parity on the 3 data disks" volume create "$T/p2/a" v --layout parity --columns 3
m=$("$SPACECTL" volume list "$T/p2/a" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['volumes'][0]['metadata_disks'])")
[ "$m" = "[0, 1, 2]" ] && ok "metadata never on the journal disk" || not_ok "metadata never on the journal disk" "$m"
"$SPACECTL" disk add --help | grep -q -- "--usage" && ok "disk add --help" || not_ok "disk add --help"
"$SPACECTL" disk --help | grep -q "replace SOURCE OLD NEW" && ok "disk --help" || not_ok "disk --help"
"$SPACECTL" scrub --help | grep -q -- "--rate" && ok "scrub --help" || not_ok "scrub --help"

echo "1..$n"
[ "$failed" -eq 0 ]
