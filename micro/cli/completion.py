"""``micro completion bash|zsh|fish``: a completion script made from the parser, so
it always lists the commands and options this ``micro`` has."""

from __future__ import annotations

import argparse
from typing import Any

SHELLS = ("bash", "zsh", "fish")

EXAMPLES = """\
install:
  bash:  micro completion bash > ~/.local/share/bash-completion/completions/micro
  zsh:   micro completion zsh > ~/.zfunc/_micro   (with fpath+=(~/.zfunc) before compinit)
  fish:  micro completion fish > ~/.config/fish/completions/micro.fish
"""


def add_parser(commands: Any, top: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print the completion script of SHELL on stdout.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("shell", choices=SHELLS)
    parser.set_defaults(run=lambda args: _print(args.shell, top))


def _print(shell: str, top: argparse.ArgumentParser) -> int:
    print(script(shell, commands(top)), end="")
    return 0


def commands(top: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Each subcommand's option strings (its choices too, for positional choices)."""
    found: dict[str, list[str]] = {}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                words: list[str] = []
                for option in sub._actions:
                    words += option.option_strings
                    if not option.option_strings and option.choices:
                        words += [str(c) for c in option.choices]
                found[name] = words
    return found


def script(shell: str, words: dict[str, list[str]]) -> str:
    names = " ".join(words)
    if shell == "fish":
        lines = [f"complete -c micro -f -n __fish_use_subcommand -a '{names}'"]
        for name, options in words.items():
            for option in options:
                flag = f"-l {option[2:]}" if option.startswith("--") else None
                flag = flag or (f"-s {option[1:]}" if option.startswith("-") else f"-a {option}")
                lines.append(f"complete -c micro -n '__fish_seen_subcommand_from {name}' {flag}")
        return "\n".join(lines) + "\n"
    cases = "\n".join(
        f'        {name}) words="{" ".join(opts)}" ;;' for name, opts in words.items()
    )
    bash = f"""_micro() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} words
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "{names}" -- "$cur"))
        return
    fi
    case ${{COMP_WORDS[1]}} in
{cases}
        *) words="" ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
    [ ${{#COMPREPLY[@]}} -eq 0 ] && COMPREPLY=($(compgen -f -- "$cur"))
}}
complete -F _micro micro
"""
    if shell == "zsh":
        return "#compdef micro\nautoload -U +X bashcompinit && bashcompinit\n" + bash
    return bash
