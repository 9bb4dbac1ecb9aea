# kroute.bash - bash completion for kroute (installed by make install).
_kroute() {
    local cur prev cmd
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    cmd=${COMP_WORDS[1]}
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "run check graph test broker replay version help" -- "$cur"))
        return
    fi
    case $prev in
        --log-level) COMPREPLY=($(compgen -W "debug info warn error" -- "$cur")); return ;;
        --log-format) COMPREPLY=($(compgen -W "text json" -- "$cur")); return ;;
        --format) COMPREPLY=($(compgen -W "mermaid dot" -- "$cur")); return ;;
        --admin-token-file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --brokers|--group|--workers|--admin|--drain-timeout|--max-inflight|--to|--partition|--from-offset|--until-offset|--port) return ;;
    esac
    case $cur in
        -*)
            case $cmd in
                run|check) COMPREPLY=($(compgen -W "--brokers --group --workers --admin --admin-token-file --max-inflight --drain-timeout --no-watch --log-level --log-format" -- "$cur")) ;;
                graph) COMPREPLY=($(compgen -W "--format" -- "$cur")) ;;
                broker) COMPREPLY=($(compgen -W "--port" -- "$cur")) ;;
                replay) COMPREPLY=($(compgen -W "--brokers --to --partition --from-offset --until-offset --dry-run" -- "$cur")) ;;
            esac ;;
        *) COMPREPLY=($(compgen -f -- "$cur")) ;;
    esac
}
complete -F _kroute kroute
