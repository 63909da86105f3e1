// Command service is the operator's command for rs: it builds one request,
// sends it to rs's control socket and prints the reply.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/urfave/cli/v2"

	"github.com/reincarnation/rs/rs/control"
)

func main() {
	app := &cli.App{
		Name:      "service",
		Usage:     "control the services of rs",
		UsageText: "service [--socket PATH] [--timeout D] <command> [flags] <label>",
		Description: "Flags come before the label. The socket is --socket, else $RS_SOCKET, else rs.sock in\n" +
			"$XDG_RUNTIME_DIR/rs, else /run/rs for root, else $TMPDIR/rs-<uid> (/tmp/rs-<uid>).\n" +
			"service talks only to an rs of its own uid or root (SO_PEERCRED). Without --timeout a command\n" +
			"waits 10s (status, clone, unclone), 1m (up, down, restart, shutdown) or 1m plus --maxtime\n" +
			"(update), and gives up on an rs that says nothing for 5s (stopped).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "socket", Usage: "rs control socket (default: " + control.DefaultSocket() + ")"},
			&cli.DurationFlag{Name: "timeout", Usage: "give up waiting for rs after this long", DefaultText: "10s, 1m or 1m plus --maxtime: see above"},
		},
		OnUsageError: usageError,
		Action:       unknownCommand,
		Commands: []*cli.Command{
			{
				Name: "up", Usage: "start a service; returns when its init succeeded", ArgsUsage: "<label>",
				Description: "Every config key is a flag: --ping-timeout for ping_timeout, and so on.",
				Flags:       upFlags(),
				Action:      up,
			},
			{Name: "down", Usage: "stop a service; it stays down until up", ArgsUsage: "<label>", Action: simple(control.OpDown)},
			{Name: "restart", Usage: "stop and start again; clears failed and backoff", ArgsUsage: "<label>", Action: simple(control.OpRestart)},
			{
				Name: "update", Usage: "live update to a new binary", ArgsUsage: "<label>",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "binary", Usage: "new binary (default: the current one)"},
					&cli.Int64Flag{Name: "state", Value: 1, Usage: "state to reach first: 1 work-free, 2 request-free, 3 protocol-free, 4+ custom"},
					&cli.DurationFlag{Name: "maxtime", Value: 2 * time.Second, Usage: "how long the service may take to get ready"},
					&cli.BoolFlag{Name: "discard-state", Usage: "commit even if the new instance does not take the state and fds it is handed"},
					&cli.BoolFlag{Name: "quiet", Usage: "do not print the update's steps"},
				},
				Action: update,
			},
			{Name: "clone", Usage: "keep a warm standby instance", ArgsUsage: "<label>", Action: simple(control.OpClone)},
			{Name: "unclone", Usage: "drop the standby instance", ArgsUsage: "<label>", Action: simple(control.OpUnclone)},
			{
				Name: "status", Usage: "show the services", ArgsUsage: "[<label>]",
				Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
				Action: status,
			},
			{Name: "shutdown", Usage: "stop every service, then rs exits", Action: shutdown},
		},
	}
	for _, cmd := range app.Commands {
		cmd.OnUsageError = usageError
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "service:", escape(err.Error()))
		os.Exit(1)
	}
}

// usageError makes a bad flag one line, not the line and the usage.
func usageError(c *cli.Context, err error, isSub bool) error {
	if isSub {
		return fmt.Errorf("%s: %w (see service %s --help)", c.Command.Name, err, c.Command.Name)
	}
	return fmt.Errorf("%w (see service --help)", err)
}

// unknownCommand runs when the first argument names no command.
func unknownCommand(c *cli.Context) error {
	if c.NArg() == 0 {
		return cli.ShowAppHelp(c)
	}
	return fmt.Errorf("unknown command: %s (see service --help)", c.Args().First())
}

// escape shows text that came from rs, and through it from a service (an
// init error, last_exit, a message), with every character that is not
// printable escaped as Go would quote it: no escape sequence, carriage
// return or newline of a service reaches the operator's terminal raw.
func escape(s string) string {
	var b strings.Builder
	for i, w := 0, 0; i < len(s); i += w {
		r, n := utf8.DecodeRuneInString(s[i:])
		w = n
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		}
	}
	return b.String()
}

func client(c *cli.Context) control.Client {
	sock := c.String("socket")
	if sock == "" {
		sock = control.DefaultSocket()
	}
	return control.Client{Socket: sock, Timeout: c.Duration("timeout")}
}

// label returns the one positional argument, the label.
func label(c *cli.Context) (string, error) {
	switch c.NArg() {
	case 1:
		return c.Args().First(), nil
	case 0:
		return "", fmt.Errorf("%s: missing <label>", c.Command.Name)
	}
	return "", afterLabel(c, 1)
}

// afterLabel is the error for arguments beyond the first want.
func afterLabel(c *cli.Context, want int) error {
	extra := c.Args().Slice()[want:]
	for _, a := range extra {
		if strings.HasPrefix(a, "-") {
			return fmt.Errorf("%s: flags go before the label: %q after %q", c.Command.Name, a, c.Args().Slice()[:want])
		}
	}
	return fmt.Errorf("%s: one <label> expected, got %q (flags go before the label)", c.Command.Name, c.Args().Slice())
}

func do(c *cli.Context, req control.Request, progress func(string)) error {
	r, err := client(c).Do(req, progress)
	if err != nil {
		return err
	}
	if r.Message != "" {
		fmt.Println(escape(r.Message))
	}
	return nil
}

func simple(op string) cli.ActionFunc {
	return func(c *cli.Context) error {
		l, err := label(c)
		if err != nil {
			return err
		}
		return do(c, control.Request{Op: op, Label: l}, nil)
	}
}

// upFlags are the settings of control.Patch, one flag each.
func upFlags() []cli.Flag {
	var flags []cli.Flag
	for _, f := range control.Fields() {
		if f.Kind == control.KindBool {
			flags = append(flags, &cli.BoolFlag{Name: f.Flag, Usage: f.Usage})
			continue
		}
		flags = append(flags, &cli.StringFlag{Name: f.Flag, Usage: f.Usage})
	}
	return flags
}

func up(c *cli.Context) error {
	l, err := label(c)
	if err != nil {
		return err
	}
	var p control.Patch
	for _, f := range control.Fields() {
		if !c.IsSet(f.Flag) {
			continue
		}
		v := c.String(f.Flag)
		if f.Kind == control.KindBool {
			v = fmt.Sprint(c.Bool(f.Flag))
		}
		if f.Key == "binary" {
			if v, err = filepath.Abs(v); err != nil {
				return err
			}
		}
		if err := p.SetFlag(f.Key, v); err != nil {
			return err
		}
	}
	// The checks the config file makes, before anything is sent.
	if err := p.Check(); err != nil {
		return fmt.Errorf("service %q: %w", l, err)
	}
	return do(c, control.Request{Op: control.OpUp, Label: l, Spec: &p}, nil)
}

func update(c *cli.Context) error {
	l, err := label(c)
	if err != nil {
		return err
	}
	st := c.Int64("state")
	if st < 1 || st > control.MaxState {
		return fmt.Errorf("update: --state %d: out of range (1 to %d)", st, control.MaxState)
	}
	req := control.Request{Op: control.OpUpdate, Label: l, State: int(st), MaxTime: c.Duration("maxtime"),
		DiscardState: c.Bool("discard-state")}
	if b := c.String("binary"); b != "" {
		if req.Binary, err = filepath.Abs(b); err != nil {
			return err
		}
	}
	progress := func(p string) { fmt.Fprintln(os.Stderr, escape(p)) }
	if c.Bool("quiet") {
		progress = nil
	}
	return do(c, req, progress)
}

func shutdown(c *cli.Context) error {
	if c.NArg() > 0 {
		if strings.HasPrefix(c.Args().First(), "-") {
			return fmt.Errorf("shutdown: unknown flag %q", c.Args().First())
		}
		return fmt.Errorf("shutdown takes no label")
	}
	return do(c, control.Request{Op: control.OpShutdown}, nil)
}

func status(c *cli.Context) error {
	if c.NArg() > 1 {
		return afterLabel(c, 1)
	}
	r, err := client(c).Do(control.Request{Op: control.OpStatus, Label: c.Args().First()}, nil)
	if err != nil {
		return err
	}
	if r.Services == nil {
		r.Services = []control.Status{}
	}
	if c.Bool("json") {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Services []control.Status `json:"services"`
			RS       *control.Daemon  `json:"rs,omitempty"`
		}{r.Services, r.Daemon})
	}
	return table(os.Stdout, r.Services)
}

func table(w io.Writer, services []control.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LABEL\tSTATE\tPID\tUPTIME\tRESTARTS\tPING\tLAST EXIT")
	for _, s := range services {
		pid, uptime, rtt := "-", "-", "-"
		if s.Pid != 0 {
			pid = fmt.Sprint(s.Pid)
		}
		if s.UptimeS > 0 {
			uptime = (time.Duration(s.UptimeS) * time.Second).String()
		}
		if s.PingRTTUs > 0 {
			rtt = fmt.Sprintf("%dµs", s.PingRTTUs)
		}
		last := escape(s.LastExit)
		if last == "" {
			last = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", escape(s.Label), escape(s.State), pid, uptime, s.Restarts, rtt, last)
	}
	return tw.Flush()
}
