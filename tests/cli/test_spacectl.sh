#!/bin/sh
# test_spacectl.sh -- spacectl against real directories, speaking TAP.
#
# Every refused command must exit non-zero, print exactly one line on
# stderr ("spacectl: ..." naming the problem) and leave every disk byte
# for byte as it was: names, types, sizes, modes, mtimes and the md5 of
# every file are compared before and after.  Then the happy path: a pool
# of six directories, one volume of each layout, list, status, delete.
#
# Needs SPACECTL (the binary); python3 checks the JSON.
set -u

SPACECTL=${SPACECTL:?set SPACECTL to the spacectl binary}
T=$(mktemp -d /tmp/spacectl-test.XXXXXX)
trap 'rm -rf "$T"' EXIT INT TERM
export SPACEFS_RUN_DIR="$T/run" # never talk to a real daemon
mkdir -p "$T/run"

n=0
failed=0

ok() {
	n=$((n + 1))
	echo "ok $n - $1"
}

not_ok() {
	n=$((n + 1))
	failed=$((failed + 1))
	echo "not ok $n - $1"
	shift
	for line in "$@"; do
		printf '#   %s\n' "$line"
	done
}

# Everything under $T/disks that a change could touch.
snapshot() {
	(
		cd "$T/disks" || exit 1
		find . -printf '%p %y %s %m %T@\n' | LC_ALL=C sort
		find . -type f -exec md5sum {} + | LC_ALL=C sort
	)
}

# refuse DESCRIPTION EXPECTED-TEXT ARGS...: spacectl ARGS must fail cleanly.
refuse() {
	desc=$1
	want=$2
	shift 2
	before=$(snapshot)
	"$SPACECTL" "$@" >"$T/out" 2>"$T/err"
	rc=$?
	after=$(snapshot)
	lines=$(wc -l <"$T/err")
	first=$(head -n 1 "$T/err")
	if [ "$rc" -eq 0 ]; then
		not_ok "$desc" "exit status 0" "stderr: $first"
	elif [ "$lines" -ne 1 ]; then
		not_ok "$desc" "$lines lines on stderr:" "$(cat "$T/err")"
	elif [ "${first#spacectl: }" = "$first" ]; then
		not_ok "$desc" "stderr does not start with 'spacectl: ': $first"
	elif ! grep -qF -- "$want" "$T/err"; then
		not_ok "$desc" "stderr lacks '$want': $first"
	elif [ "$before" != "$after" ]; then
		not_ok "$desc" "the disks changed"
	else
		ok "$desc (exit $rc: $first)"
	fi
}

# accept DESCRIPTION ARGS...: spacectl ARGS must succeed quietly on stderr.
accept() {
	desc=$1
	shift
	if "$SPACECTL" "$@" >"$T/out" 2>"$T/err" && [ ! -s "$T/err" ]; then
		ok "$desc"
	else
		not_ok "$desc" "stderr: $(cat "$T/err")"
	fi
}

# check DESCRIPTION COMMAND...: COMMAND must succeed; its output is only
# shown (as TAP comments) when it does not.
check() {
	desc=$1
	shift
	if "$@" >"$T/check" 2>&1; then
		ok "$desc"
	else
		not_ok "$desc" "$(cat "$T/check")"
	fi
}

D=$T/disks
mkdir -p "$D/d0" "$D/d1" "$D/d2" "$D/d3" "$D/d4" "$D/d5" "$D/nonempty/x" \
	"$D/outer/inner" "$D/e1" "$D/e2" "$D/e3" "$D/two0" "$D/two1" "$D/one0" \
	"$D/other0" "$D/plain"
echo hello >"$D/afile"
ln -s d0 "$D/d0link"
long=$(printf 'a%.0s' $(seq 1 65))

# ---- help ----
for cmd in "" "pool" "pool create" "volume" "volume create" "volume list" \
	"volume delete" "status"; do
	# shellcheck disable=SC2086
	if "$SPACECTL" $cmd --help >"$T/out" 2>"$T/err" && grep -q '^usage: spacectl' "$T/out" &&
		[ ! -s "$T/err" ]; then
		ok "spacectl $cmd --help"
	else
		not_ok "spacectl $cmd --help"
	fi
done
"$SPACECTL" volume create --help >"$T/out.vc"
check "volume create --help lists every option" sh -c \
	'for o in --layout --copies --parity --columns --interleave --integrity --help; do
		grep -q -- "$o" "$1" || exit 1; done' sh "$T/out.vc"

# ---- command line ----
refuse "no command" "no command"
refuse "unknown command" "unknown command 'frob'" frob
refuse "unknown pool command" "unknown command 'grow'" pool grow
refuse "pool without command" "missing command" pool
refuse "unknown option" "unknown option '--bogus'" pool create p "$D/e1" --bogus

# ---- pool create refusals ----
refuse "pool create: no disks" "at least one DISK" pool create lab
refuse "pool create: nothing at all" "needs NAME" pool create
refuse "pool create: missing path" "$D/nope: no such directory" pool create lab "$D/e1" "$D/nope"
refuse "pool create: not a directory" "$D/afile: not a directory" pool create lab "$D/e1" "$D/afile"
refuse "pool create: listed twice" "listed twice" pool create lab "$D/e1" "$D/e2" "$D/e1"
refuse "pool create: twice via symlink" "listed twice" pool create lab "$D/d0" "$D/d0link"
refuse "pool create: twice via .." "listed twice" pool create lab "$D/e1" "$D/e2/../e1"
refuse "pool create: twice via symlink, --force" "listed twice" pool create lab "$D/d0" "$D/d0link" --force
refuse "pool create: inside another" "inside another disk" pool create lab "$D/outer" "$D/outer/inner"
refuse "pool create: inside another, reversed" "inside another disk" pool create lab "$D/outer/inner" "$D/e1" "$D/outer"
refuse "pool create: non-empty" "$D/nonempty: directory is not empty" pool create lab "$D/e1" "$D/nonempty"
refuse "pool create: empty name" "pool name '': name is empty" pool create "" "$D/e1"
refuse "pool create: name starting with ." "starts with '.'" pool create .lab "$D/e1"
refuse "pool create: name with /" "characters other than" pool create a/b "$D/e1"
refuse "pool create: name with space" "characters other than" pool create "a b" "$D/e1"
refuse "pool create: name of 65 characters" "longer than 64" pool create "$long" "$D/e1"
accept "pool create: another pool on other0" pool create otherpool "$D/other0"
refuse "pool create: disk already in a pool" "already a disk of pool 'otherpool'" pool create lab "$D/e1" "$D/other0"

# ---- the happy path ----
accept "pool create lab on 6 disks" pool create lab "$D/d0" "$D/d1" "$D/d2" "$D/d3" "$D/d4" "$D/d5"
check "every disk has spacefs.pool" sh -c 'for i in 0 1 2 3 4 5; do
	test -s "$1/d$i/spacefs.pool" || exit 1; done' sh "$D"
accept "volume create mirror" volume create "$D/d0" vms --layout mirror
check "mirror defaults: 3 columns x 2 copies, 256K" grep -q "mirror, 2 copies, 3 columns, 256 KiB interleave, integrity on" "$T/out"
accept "volume create parity" volume create "$D/d3" archive --layout parity --parity 2 --interleave 64K
check "parity: 6 columns, 64K" grep -q "parity, 2 parity, 6 columns, 64 KiB interleave" "$T/out"
accept "volume create simple" volume create "$D/d5" scratch --layout simple --columns 4 --integrity off --interleave 1M
check "simple: 4 columns, 1M, integrity off" grep -q "simple, 4 columns, 1 MiB interleave, integrity off" "$T/out"
accept "volume create mirror 3 copies" volume create "$D/d1" three --layout mirror --copies 3 --columns 2
accept "volume list" volume list "$D/d2"
check "volume list shows 4 volumes" sh -c '[ "$(grep -cE "^(vms|archive|scratch|three) " "$1")" -eq 4 ]' sh "$T/out"
check "volume list header" grep -q "^NAME  *LAYOUT  *COPIES  *PARITY  *COLUMNS  *INTERLEAVE  *INTEGRITY  *METADATA  *USABLE  *STATE" "$T/out"
accept "volume list --json" volume list "$D/d2" --json
check "volume list --json parses" python3 -m json.tool "$T/out"
accept "status" status "$D/d4"
check "status shows the pool healthy" grep -q "^health  *healthy" "$T/out"
check "status lists 6 disks" sh -c '[ "$(grep -cE "^ *[0-5]  .*  healthy " "$1")" -eq 6 ]' sh "$T/out"
accept "status --json" status "$D/d4" --json
check "status --json parses" python3 -m json.tool "$T/out"
check "status --json content" python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
assert s["pool"]["name"] == "lab" and s["pool"]["health"] == "healthy"
assert s["pool"]["generation"] == 5, s["pool"]["generation"]
assert [d["state"] for d in s["disks"]] == ["healthy"] * 6
v = {x["name"]: x for x in s["volumes"]}
assert v["vms"]["layout"] == "mirror" and v["vms"]["copies"] == 2 and v["vms"]["columns"] == 3
assert v["archive"]["parity"] == 2 and v["archive"]["interleave"] == 65536
assert v["scratch"]["integrity"] is False and len(v["scratch"]["metadata_disks"]) == 3
assert v["three"]["copies"] == 3 and all(x["usable"] > 0 for x in v.values())
assert s["daemon"] is None
' "$T/out"

# ---- volume create refusals (pool of 6) ----
refuse "volume create: mirror too wide" "needs 8 disks; pool 'lab' has 6" volume create "$D/d0" v --layout mirror --columns 4
refuse "volume create: 3 copies too wide" "needs 9 disks" volume create "$D/d0" v --layout mirror --copies 3 --columns 3
refuse "volume create: parity too wide" "needs 7 disks" volume create "$D/d0" v --layout parity --columns 7
refuse "volume create: parity k < 2" "needs at least 2" volume create "$D/d0" v --layout parity --parity 2 --columns 3
refuse "volume create: journal smaller than two of its largest updates" "is too small for 5 columns of 1024 KiB: needs at least 11 MiB" volume create "$D/d0" v --layout parity --interleave 1M --journal-size 8M
refuse "volume create: simple too wide" "needs 7 disks" volume create "$D/d0" v --layout simple --columns 7
refuse "volume create: interleave not a power of two" "interleave 12288 is not a power of two" volume create "$D/d0" v --layout simple --interleave 12K
refuse "volume create: interleave too small" "interleave 8192" volume create "$D/d0" v --layout simple --interleave 8K
refuse "volume create: interleave too big" "interleave 2097152" volume create "$D/d0" v --layout simple --interleave 2M
refuse "volume create: interleave unreadable" "cannot read 'abc'" volume create "$D/d0" v --layout simple --interleave abc
refuse "volume create: interleave bad suffix" "cannot read '64X'" volume create "$D/d0" v --layout simple --interleave 64X
refuse "volume create: interleave empty" "cannot read ''" volume create "$D/d0" v --layout simple --interleave ""
refuse "volume create: name starting with ." "starts with '.'" volume create "$D/d0" .v --layout simple
refuse "volume create: name with /" "characters other than" volume create "$D/d0" a/b --layout simple
refuse "volume create: name of 65 characters" "longer than 64" volume create "$D/d0" "$long" --layout simple
refuse "volume create: empty name" "name is empty" volume create "$D/d0" "" --layout simple
refuse "volume create: duplicate name" "volume 'vms': already exists" volume create "$D/d0" vms --layout simple
refuse "volume create: unknown layout" "unknown layout 'raid5'" volume create "$D/d0" v --layout raid5
refuse "volume create: no layout" "--layout is required" volume create "$D/d0" v
refuse "volume create: --copies with simple" "only a mirror layout has copies" volume create "$D/d0" v --layout simple --copies 2
refuse "volume create: --copies with parity" "only a mirror layout has copies" volume create "$D/d0" v --layout parity --copies 2
refuse "volume create: --parity with mirror" "only a parity layout" volume create "$D/d0" v --layout mirror --parity 1
refuse "volume create: --parity with simple" "only a parity layout" volume create "$D/d0" v --layout simple --parity 2
refuse "volume create: --copies 4" "must be 2 or 3" volume create "$D/d0" v --layout mirror --copies 4
refuse "volume create: --parity 3" "must be 1 or 2" volume create "$D/d0" v --layout parity --parity 3
refuse "volume create: --columns 0" "not a positive number" volume create "$D/d0" v --layout simple --columns 0
refuse "volume create: --columns x" "not a positive number" volume create "$D/d0" v --layout simple --columns x
refuse "volume create: --integrity maybe" "must be on or off" volume create "$D/d0" v --layout simple --integrity maybe
refuse "volume create: --layout without value" "needs a value" volume create "$D/d0" v --layout
refuse "volume create: no NAME" "needs SOURCE and NAME" volume create "$D/d0" --layout simple
refuse "volume create: extra argument" "too many arguments" volume create "$D/d0" v w --layout simple
refuse "volume create: SOURCE not a pool disk" "not a spacefs pool disk" volume create "$D/plain" v --layout simple
refuse "volume create: SOURCE missing" "$D/gone: directory not found" volume create "$D/gone" v --layout simple
accept "pool create: 2 disks" pool create two "$D/two0" "$D/two1"
refuse "volume create: parity on 2 disks" "parity needs at least 3 disks; pool 'two' has 2" volume create "$D/two0" v --layout parity
refuse "volume create: 3 copies on 2 disks" "mirror needs at least 3 disks" volume create "$D/two0" v --layout mirror --copies 3
accept "pool create: 1 disk" pool create one "$D/one0"
refuse "volume create: mirror on 1 disk" "mirror needs at least 2 disks; pool 'one' has 1" volume create "$D/one0" v --layout mirror
accept "volume create: simple on 1 disk" volume create "$D/one0" v --layout simple

# ---- other refusals ----
refuse "volume delete: no such volume" "volume 'nope': no such volume in pool 'lab'" volume delete "$D/d0" nope
refuse "volume delete: no NAME" "needs SOURCE and NAME" volume delete "$D/d0"
refuse "volume list: not a pool disk" "not a spacefs pool disk" volume list "$D/plain"
refuse "volume list: no SOURCE" "needs SOURCE" volume list
refuse "status: not a pool disk" "not a spacefs pool disk" status "$D/plain"
refuse "status: too many arguments" "too many arguments" status "$D/d0" "$D/d1"
cp "$D/d2/spacefs.pool" "$T/saved.pool"
printf 'garbage' | dd of="$D/d2/spacefs.pool" bs=1 seek=400 conv=notrunc 2>/dev/null
refuse "status from a damaged disk" "$D/d2/spacefs.pool: checksum mismatch (damaged superblock)" status "$D/d2"
accept "status through a healthy disk names the damaged one" status "$D/d0"
check "damaged disk shown" grep -q "checksum mismatch" "$T/out"
cp "$T/saved.pool" "$D/d2/spacefs.pool"

# ---- --force ----
accept "pool create --force on a non-empty directory" pool create forced "$D/nonempty" --force
check "--force kept the other files" test -d "$D/nonempty/x"
accept "pool create --force on a disk of another pool" pool create taken "$D/other0" --force
refuse "the old pool is gone from that disk" "pool 'taken'" pool create again "$D/other0"

# ---- delete ----
accept "volume delete" volume delete "$D/d1" archive
check "archive's directories are gone" sh -c 'for i in 0 1 2 3 4 5; do
	test ! -e "$1/d$i/vol/archive" || exit 1; done' sh "$D"
check "other volumes' directories stay" test -d "$D/d0/vol/vms"
"$SPACECTL" volume list "$D/d0" >"$T/out" 2>&1
check "list no longer shows archive" sh -c '! grep -q "^archive " "$1" && grep -q "^vms " "$1"' sh "$T/out"

# ---- incomplete pools ----
mv "$D/d1" "$T/d1.away"
mv "$D/d2" "$T/d2.away"
accept "status with 2 of 6 disks missing (degraded)" status "$D/d0"
check "health degraded" grep -q "^health  *degraded" "$T/out"
mv "$D/d3" "$T/d3.away"
refuse "volume create on an incomplete pool" "is incomplete" volume create "$D/d0" v --layout simple
accept "status of an incomplete pool" status "$D/d0" --json
check "health incomplete" python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
assert s["pool"]["health"] == "incomplete"
assert [d["state"] for d in s["disks"]].count("missing") == 3
' "$T/out"
mv "$T/d1.away" "$D/d1"
mv "$T/d2.away" "$D/d2"
mv "$T/d3.away" "$D/d3"
accept "status after the disks return" status "$D/d0"
check "healthy again" grep -q "^health  *healthy" "$T/out"

echo "1..$n"
echo "# $((n - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
