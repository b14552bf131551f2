#!/bin/bash
# test_completion.sh -- tools/spacectl.bash against the spacectl it completes.
#
#   SPACECTL=build/tools/spacectl tests/pkg/test_completion.sh     (TAP)
#
# The completion keeps its own lists of verbs and options (asking the
# program at every TAB would be slow), so they can drift: every command
# and option of `spacectl --help` and of each `spacectl COMMAND --help`
# must be offered, and nothing that is not there.  Volume and disk names
# come from a scratch pool made with the spacectl under test.
set -u
src=$(cd "$(dirname "$0")/../.." && pwd)
SPACECTL=$(realpath "${SPACECTL:-$src/build/tools/spacectl}")
bc=/usr/share/bash-completion/bash_completion
n=0 failed=0
ok() { # COND DESCRIPTION [DIAG]
	n=$((n + 1))
	if [ "$1" = 0 ]; then echo "ok $n - $2"; else
		echo "not ok $n - $2"; failed=$((failed + 1))
		[ -n "${3:-}" ] && printf '# %s\n' "$3"
	fi
}
if [ ! -r $bc ]; then
	echo "1..0 # SKIP bash-completion is not installed"
	exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/d0" "$tmp/d1" "$tmp/d2"
ln -s "$SPACECTL" "$tmp/bin/spacectl"
export PATH="$tmp/bin:$PATH" SPACEFS_RUN_DIR="$tmp/run"
spacectl pool create t "$tmp/d0" "$tmp/d1" "$tmp/d2" >/dev/null
spacectl volume create "$tmp/d0" Alpha --layout mirror >/dev/null
spacectl volume create "$tmp/d0" Beta --layout simple >/dev/null

# complete WORD... : what the completion offers for the last word, sorted.
complete_words() {
	bash -c 'source '$bc'; source "$0"
COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
_spacectl spacectl "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"
printf "%s\n" "${COMPREPLY[@]}"' "$src/tools/spacectl.bash" spacectl "$@" | sort | paste -sd' '
}
sorted() { tr ' ' '\n' | grep -v '^$' | sort -u | paste -sd' '; }

# The commands of `spacectl --help`: "owner move|balance|prefer" -> owner.
want=$(spacectl --help | sed -n '/^commands:/,/^$/p' | awk 'NR > 1 && NF { print $1 }' | sorted)
got=$(complete_words "" | tr ' ' '\n' | grep -v '^-' | sorted)
ok "$([ "$want" = "$got" ] && echo 0 || echo 1)" "the verbs are those of spacectl --help" \
	"help: $want / completion: $got"
got=$(complete_words vol)
ok "$([ "$got" = volume ] && echo 0 || echo 1)" "spacectl vol<TAB> -> volume" "got: $got"

for group in pool volume owner disk; do
	want=$(spacectl $group --help | sed -n '/commands:$/,/^$/p' | grep '^  [a-z]' | awk '{ print $1 }' | sorted)
	got=$(complete_words $group "" | tr ' ' '\n' | grep -v '^-' | sorted)
	ok "$([ "$want" = "$got" ] && echo 0 || echo 1)" "$group: the sub-commands of its --help" \
		"help: $want / completion: $got"
done

# Long options of each command's --help vs what -<TAB> offers there
# (--help is offered everywhere: every command takes it).
for cmd in "pool create" "volume create" "volume list" "volume delete" status smbconf \
	"disk replace" "disk retire" repair scrub metrics; do
	want=$( (spacectl $cmd --help; echo --help) | grep -o -- '--[a-z][a-z-]*' | sorted)
	got=$(complete_words $cmd "$tmp/d0" -- | sorted)
	ok "$([ "$want" = "$got" ] && echo 0 || echo 1)" "$cmd: the long options of its --help" \
		"help: $want / completion: $got"
done

got=$(complete_words volume delete "$tmp/d0" "")
ok "$([ "$got" = "Alpha Beta" ] && echo 0 || echo 1)" "volume delete SOURCE <TAB>: the pool's volumes" "got: $got"
got=$(complete_words scrub "$tmp/d0" B)
ok "$([ "$got" = "Beta" ] && echo 0 || echo 1)" "scrub SOURCE B<TAB> -> Beta" "got: $got"
got=$(complete_words disk retire "$tmp/d0" "")
want=$(printf '%s\n' 0 1 2 "$tmp/d0" "$tmp/d1" "$tmp/d2" | sort | paste -sd' ')
ok "$([ "$got" = "$want" ] && echo 0 || echo 1)" "disk retire SOURCE <TAB>: the pool's disks" "got: $got"
got=$(complete_words volume create "$tmp/d0" X --layout "")
ok "$([ "$got" = "mirror parity simple" ] && echo 0 || echo 1)" "--layout <TAB>: the layouts" "got: $got"

echo "1..$n"
[ $failed = 0 ]
