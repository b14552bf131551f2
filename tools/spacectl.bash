# bash completion for spacectl(8)                       -*- shell-script -*-
#
# Verbs and options come from this file (tests/pkg/test_completion.sh
# checks them against `spacectl --help`); volume names and disks come
# from the pool the command line already names as SOURCE, by asking
# spacectl itself (volume list, status), so they are always the pool's
# current ones.  Installed as /usr/share/bash-completion/completions/spacectl.

# The volumes of the pool that disk $1 belongs to.
_spacectl_volumes()
{
    spacectl volume list "$1" 2>/dev/null | awk 'NR > 1 && NF { print $1 }'
}

# The disks of the pool that disk $1 belongs to: indexes and paths.
_spacectl_disks()
{
    spacectl status "$1" 2>/dev/null |
        awk '/^DISK +PATH/ { on = 1; next } on && !NF { exit } on { print $1; print $2 }'
}

_spacectl()
{
    local cur prev words cword
    _init_completion || return

    local verbs="pool volume status smbconf owner node disk repair scrub metrics checkpoint backup"
    local -A sub=([pool]="create" [volume]="create list delete set"
        [owner]="move balance prefer" [node]="drain resume" [disk]="add replace retire set list"
        [checkpoint]="create list merge delete")

    # The command: one word, or a group and its verb.
    local cmd="" at=1
    if ((cword > 1)); then
        cmd=${words[1]}
        at=2
        if [[ -n ${sub[$cmd]:-} ]]; then
            ((cword > 2)) && cmd="$cmd ${words[2]}"
            at=3
        fi
    fi
    if ((cword == 1)); then
        COMPREPLY=($(compgen -W "$verbs --help --version" -- "$cur"))
        return
    fi
    if ((cword == 2)) && [[ -n ${sub[${words[1]}]:-} ]]; then
        COMPREPLY=($(compgen -W "${sub[${words[1]}]} --help" -- "$cur"))
        return
    fi

    # Options that take a value.
    case $prev in
    -l | --layout) COMPREPLY=($(compgen -W "simple mirror parity" -- "$cur")); return ;;
    -c | --copies) COMPREPLY=($(compgen -W "2 3" -- "$cur")); return ;;
    -p | --parity) COMPREPLY=($(compgen -W "1 2" -- "$cur")); return ;;
    -I | --integrity | -j | --journal) COMPREPLY=($(compgen -W "on off" -- "$cur")); return ;;
    -J | --journal-size) COMPREPLY=($(compgen -W "64M 256M 1G" -- "$cur")); return ;;
    -M | --journal-mode) COMPREPLY=($(compgen -W "write-back write-through" -- "$cur")); return ;;
    -i | --interleave) COMPREPLY=($(compgen -W "16K 32K 64K 128K 256K 512K 1M" -- "$cur")); return ;;
    -u | --usage) COMPREPLY=($(compgen -W "data journal" -- "$cur")); return ;;
    -m | --model) COMPREPLY=($(compgen -W "hdd-7200 hdd-15k ssd-sata nvme none" -- "$cur")); return ;;
    -n | --columns | -r | --rate | --interval | --node | --host | --iops | --mbps | --latency) return ;;
    --watch | --smb-conf) _filedir; return ;;
    esac

    if [[ $cur == -* ]]; then
        local o="--help"
        case $cmd in
        "pool create") o+=" --force --model" ;;
        "disk set") o+=" --model --iops --mbps --latency" ;;
        "disk add") o+=" --usage" ;;
        "volume create") o+=" --layout --copies --parity --columns --interleave --integrity --journal --journal-size --journal-mode" ;;
        "volume set") o+=" --journal --journal-size --journal-mode" ;;
        "volume list" | "disk list" | status) o+=" --json" ;;
        "disk replace" | "disk retire" | repair | scrub | backup | "checkpoint merge" | \
            "checkpoint delete") o+=" --wait --rate" ;;
        smbconf) o+=" --node --host --watch --smb-conf --interval" ;;
        esac
        COMPREPLY=($(compgen -W "$o" -- "$cur"))
        return
    fi

    # Positional arguments after the command words, options left out.
    local args=() i
    for ((i = at; i < cword; i++)); do
        case ${words[i]} in
        --layout | --copies | --parity | --columns | --interleave | --integrity | --rate | \
            --journal | --journal-size | --journal-mode | \
            --node | --host | --watch | --smb-conf | --interval | --model | --iops | --mbps | \
            --latency | --usage | -[lcpniIrjJmMu]) ((i++)) ;;
        -*) ;;
        *) args+=("${words[i]}") ;;
        esac
    done
    local n=${#args[@]} src=${args[0]:-}

    case "$cmd:$n" in
    "pool create:"*) _filedir -d ;; # NAME, then disks
    *:0) _filedir -d ;;             # SOURCE: a disk of the pool
    "volume delete:1" | "volume set:1" | "owner move:1" | "owner prefer:1" | repair:1 | scrub:1 | \
        "checkpoint "*:1 | backup:1)
        COMPREPLY=($(compgen -W "$(_spacectl_volumes "$src")" -- "$cur")) ;;
    "disk replace:1" | "disk retire:1" | "disk set:1")
        COMPREPLY=($(compgen -W "$(_spacectl_disks "$src")" -- "$cur")) ;;
    "disk replace:2" | "disk add:1") _filedir -d ;;
    "owner prefer:2") COMPREPLY=($(compgen -W "none" -- "$cur")) ;;
    esac
} &&
    complete -F _spacectl spacectl

# ex: filetype=sh
