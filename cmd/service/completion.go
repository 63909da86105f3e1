package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/reincarnation/rs/rs/control"
)

// Shell completion is urfave/cli's own: with EnableBashCompletion, a
// command line ending in --generate-bash-completion prints the words
// that may come next (commands, a command's flags after a "-", and here
// the labels rs has, asked of rs with a short timeout) instead of
// running. `service completion bash|zsh` prints a script that asks it
// at each TAB. In zsh (the environment variable "0" ends in zsh, as
// cli's own zsh script sets it) each word comes with its description:
// a command's usage, a label's state.

// completionTimeout bounds the status request behind a label completion:
// a TAB must not hang on an rs that does not answer.
const completionTimeout = time.Second

func completionCommand() *cli.Command {
	return &cli.Command{
		Name: "completion", Usage: "print the shell completion script: bash or zsh", ArgsUsage: "bash|zsh",
		Description: "bash: source <(service completion bash), or save it as /etc/bash_completion.d/service.\n" +
			"zsh: service completion zsh > \"${fpath[1]}/_service\" (then compinit), or source <(service completion zsh)\n" +
			"after compinit.",
		BashComplete: func(c *cli.Context) {
			if c.NArg() == 0 {
				fmt.Fprintln(c.App.Writer, "bash\nzsh")
			}
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("completion: want one of bash, zsh")
			}
			prog, err := os.Executable()
			if err != nil {
				prog = ""
			}
			switch c.Args().First() {
			case "bash":
				fmt.Fprintf(c.App.Writer, bashCompletion, shellQuote(prog))
			case "zsh":
				fmt.Fprintf(c.App.Writer, zshCompletion, shellQuote(prog))
			default:
				return fmt.Errorf("completion: %q: want bash or zsh", c.Args().First())
			}
			return nil
		},
	}
}

// shellQuote quotes s for sh, bash and zsh alike.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// The scripts run the binary that printed them (its path is %s), or the
// `service` on the command line if that one is gone.
const bashCompletion = `# bash completion of service, rs's operator command.
#   source <(service completion bash)
_service_complete() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  local prog=%s
  [[ -x $prog ]] || prog=${COMP_WORDS[0]}
  local -a args=("${COMP_WORDS[@]:1:COMP_CWORD-1}")
  [[ $cur == -* ]] && args+=("$cur")
  local words
  words=$("$prog" "${args[@]}" --generate-bash-completion 2>/dev/null)
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o bashdefault -o default -F _service_complete service
`

const zshCompletion = `#compdef service
# zsh completion of service, rs's operator command.
#   service completion zsh > "${fpath[1]}/_service"
_service() {
  local cur=${words[CURRENT]}
  local prog=%s
  [[ -x $prog ]] || prog=${words[1]}
  local -a args opts
  args=("${(@)words[2,CURRENT-1]}")
  [[ $cur == -* ]] && args+=("$cur")
  opts=("${(@f)$(env 0=zsh "$prog" "${(@)args}" --generate-bash-completion 2>/dev/null)}")
  if [[ -n ${opts[1]} ]]; then
    _describe 'service' opts
  else
    _files
  fi
}
if [[ ${funcstack[1]} == _service ]]; then
  _service "$@"
else
  compdef _service service
fi
`

// withCompletion gives every command that takes labels a completion of
// them (and signal's of a signal name first), from its ArgsUsage.
func withCompletion(cmds []*cli.Command) {
	for _, cmd := range cmds {
		if cmd.BashComplete != nil {
			continue
		}
		cmd := cmd
		var before, many bool // a SIGNAL comes first; labels go on
		switch u := cmd.ArgsUsage; {
		case strings.Contains(u, "<SIGNAL>"):
			before = true
		case strings.Contains(u, "<label> [<label>"), strings.Contains(u, "<label> ..."):
			many = true
		case strings.Contains(u, "label>"):
		default:
			continue
		}
		cmd.BashComplete = func(c *cli.Context) {
			if args := os.Args; len(args) > 2 && strings.HasPrefix(args[len(args)-2], "-") {
				cli.DefaultCompleteWithFlags(cmd)(c)
				return
			}
			n := c.NArg()
			switch {
			case before && n == 0:
				for _, s := range completionSignals {
					fmt.Fprintln(c.App.Writer, s)
				}
			case before && n == 1, !before && (n == 0 || many):
				completeLabels(c)
			}
		}
	}
}

// completionSignals are the signals offered to `service signal`.
var completionSignals = []string{"SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGCONT", "SIGSTOP", "SIGWINCH", "SIGKILL"}

// completeLabels prints the labels rs has; nothing if rs does not answer.
func completeLabels(c *cli.Context) {
	cl := client(c)
	cl.Timeout = completionTimeout
	r, err := cl.Do(control.Request{Op: control.OpStatus}, nil)
	if err != nil {
		return
	}
	zsh := strings.HasSuffix(os.Getenv("0"), "zsh")
	for _, st := range r.Services {
		if zsh {
			fmt.Fprintf(c.App.Writer, "%s:%s\n", st.Label, st.State)
		} else {
			fmt.Fprintln(c.App.Writer, st.Label)
		}
	}
}
