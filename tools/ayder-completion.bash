# bash completion for ayder (eval "$(ayder completion bash)")
_ayder() {
    local cur prev words cword
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    local cmds="produce consume tail topics groups kv query cluster completion bench logdump logcheck"
    local global="--url --token --json -J --timeout-ms --help"
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=( $(compgen -W "$cmds --help" -- "$cur") ); return
    fi
    case "$prev" in
        -f|--file) [ "${COMP_WORDS[1]}" = produce ] && { COMPREPLY=( $(compgen -f -- "$cur") ); return; } ;;
        --url|--token|--timeout-ms|--key|--partition|-p|--group|-g|--offset|-o|--count|-c|--format|--from) return ;;
    esac
    local sub="${COMP_WORDS[1]}" opts=""
    case "$sub" in
        produce) opts="--file -f --key -k --partition -p --header -H --b64 --binary --batch-lines --batch-bytes --connections --pipeline --mode --write-concern --progress --no-progress" ;;
        consume|tail) opts="--partition -p --group -g --offset -o --from --count -c --follow -f --format --commit --exit -e" ;;
        topics) [ "$COMP_CWORD" -eq 2 ] && opts="list create describe delete" || opts="--partitions" ;;
        groups) [ "$COMP_CWORD" -eq 2 ] && opts="list describe" ;;
        kv) [ "$COMP_CWORD" -eq 2 ] && opts="get put del list" || opts="--cas --ttl-ms --prefix --limit --raw" ;;
        query) COMPREPLY=( $(compgen -f -- "$cur") $(compgen -W "$global" -- "$cur") ); return ;;
        cluster) [ "$COMP_CWORD" -eq 2 ] && opts="status transfer add promote remove" || opts="--host --raft-port --http-port --priority" ;;
        completion) opts="bash" ;;
    esac
    COMPREPLY=( $(compgen -W "$opts $global" -- "$cur") )
}
complete -F _ayder ayder
