// Command service is the operator's command for rs: it builds one request,
// sends it to rs's control socket and prints the reply.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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
			"waits 10s (status, clone, unclone), 1m (up, down, restart, reload, remove, shutdown) or 1m plus --maxtime\n" +
			"(update), logs -f without limit, and gives up on an rs that says nothing for 5s (stopped).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "socket", Usage: "rs control socket (default: " + control.DefaultSocket() + ")"},
			&cli.DurationFlag{Name: "timeout", Usage: "give up waiting for rs after this long", DefaultText: "10s, 1m or 1m plus --maxtime: see above"},
		},
		OnUsageError: usageError,
		Action:       unknownCommand,
		// --generate-bash-completion: the words that may come next
		// (completion.go).
		EnableBashCompletion: true,
		// --env A=b,c is one variable, not two.
		DisableSliceFlagSeparator: true,
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
				Name: "update", Usage: "live update to a new binary", ArgsUsage: "<label> [<label> ...]",
				Description: "Several labels are one atomic update: every service is prepared (dependents first), every new\n" +
					"instance started with its state, and all commit only if every new instance succeeded; otherwise\n" +
					"every one rolls back and the error names the one that failed. The flags apply to each member\n" +
					"(--binary: the same new binary for all, for instances of one program). Only type sef services\n" +
					"can be updated together.",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "binary", Usage: "new binary (default: the current one; with several labels, the new binary of each)"},
					&cli.Int64Flag{Name: "state", Value: 1, Usage: "state to reach first: 1 work-free, 2 request-free, 3 protocol-free, 4+ custom"},
					&cli.DurationFlag{Name: "maxtime", Value: 2 * time.Second, Usage: "how long the service (each, with several labels) may take to get ready"},
					&cli.BoolFlag{Name: "discard-state", Usage: "commit even if the new instance does not take the state and fds it is handed (each, with several labels)"},
					&cli.BoolFlag{Name: "quiet", Usage: "do not print the update's steps"},
				},
				Action: update,
			},
			{Name: "clone", Usage: "keep a warm standby instance", ArgsUsage: "<label>", Action: simple(control.OpClone)},
			{
				Name: "signal", Usage: "send a signal to the main process of a service's instance", ArgsUsage: "<SIGNAL> <label>",
				Description: "SIGNAL is a name: SIGHUP or HUP. Only the instance's main process gets it: not its other\n" +
					"processes, not a standby, not rs.",
				Action: signalCmd,
			},
			{Name: "unclone", Usage: "drop the standby instance", ArgsUsage: "<label>", Action: simple(control.OpUnclone)},
			{
				Name: "status", Usage: "show the services", ArgsUsage: "[<label>]",
				Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
				Action: status,
			},
			logsCommand(),
			eventsCommand(),
			{
				Name: "reload", Usage: "reread rs's config file and apply what changed; one line per service",
				Description: "rs reads the file it was started with (--config) again, as SIGHUP makes it do. New services\n" +
					"start, services the file no longer has stop and are removed, changed policy settings (backoff,\n" +
					"restart limits, ping period, log rotation, ...) apply at once, changed launch settings (binary,\n" +
					"args, env, user, listen, ...) restart the service, or live-update it with reload_action = \"update\".\n" +
					"Services added with service up that the file does not have are left alone. An invalid file\n" +
					"changes nothing: the error names its file and line.",
				Action: reload,
			},
			{
				Name: "remove", Usage: "stop a service and forget it (refused while others depend on it)", ArgsUsage: "<label>",
				Description: "A service from the config file comes back at the next reload.",
				Action:      simple(control.OpRemove),
			},
			{Name: "shutdown", Usage: "stop every service, then rs exits", Action: shutdown},
			{
				Name: "update-self", Usage: "replace rs itself by a new binary, in place: no service restarts",
				Description: "rs runs the new binary with --check-table on its table first; then it writes the table\n" +
					"(every service, its pids, channels, fd store, listeners, log pipes) into a memfd and execs the new\n" +
					"binary in place: same pid, so the services stay its children and run on untouched. A new rs that\n" +
					"cannot take the table execs the old binary again with it (rollback). Refused, changing nothing,\n" +
					"while something cannot be carried: a live update, a standby, a service starting, stopping or in\n" +
					"backoff, a command waiting on a service, a hook, a removal. The command waits for the new rs to\n" +
					"answer on the same socket and prints what came of it.",
				Flags:  []cli.Flag{&cli.StringFlag{Name: "binary", Usage: "the new rs binary (default: the one rs runs)"}},
				Action: updateSelf,
			},
			completionCommand(),
		},
	}
	for _, cmd := range app.Commands {
		cmd.OnUsageError = usageError
	}
	withCompletion(app.Commands)
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
		if f.Kind == control.KindEnv {
			flags = append(flags, &cli.StringSliceFlag{Name: f.Flag, Usage: f.Usage})
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
		if f.Kind == control.KindEnv {
			for _, kv := range c.StringSlice(f.Flag) {
				if err := p.SetFlag(f.Key, kv); err != nil {
					return err
				}
			}
			continue
		}
		v := c.String(f.Flag)
		if f.Kind == control.KindBool {
			v = fmt.Sprint(c.Bool(f.Flag))
		}
		if f.Key == "binary" || f.Key == "workdir" || f.Key == "env_file" {
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
	labels := c.Args().Slice()
	if len(labels) == 0 {
		return fmt.Errorf("update: missing <label>")
	}
	for _, a := range labels {
		if strings.HasPrefix(a, "-") {
			return fmt.Errorf("update: flags go before the labels: %q after %q", a, labels[0])
		}
	}
	if len(labels) > control.MaxGroup {
		return fmt.Errorf("update: %d labels: at most %d at once", len(labels), control.MaxGroup)
	}
	l := labels[0]
	var err error
	st := c.Int64("state")
	if st < 1 || st > control.MaxState {
		return fmt.Errorf("update: --state %d: out of range (1 to %d)", st, control.MaxState)
	}
	req := control.Request{Op: control.OpUpdate, Label: l, Group: labels[1:], State: int(st), MaxTime: c.Duration("maxtime"),
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

func signalCmd(c *cli.Context) error {
	switch c.NArg() {
	case 2:
	case 0, 1:
		return fmt.Errorf("signal: want <SIGNAL> <label>")
	default:
		return afterLabel(c, 2)
	}
	sig, l := c.Args().Get(0), c.Args().Get(1)
	if _, err := control.ParseSignal(sig); err != nil {
		return fmt.Errorf("signal: %w", err)
	}
	return do(c, control.Request{Op: control.OpSignal, Label: l, Signal: sig}, nil)
}

// reload prints rs's lines, one per service, each escaped on its own.
func reload(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("reload takes no label: it rereads the whole config file")
	}
	r, err := client(c).Do(control.Request{Op: control.OpReload}, nil)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(r.Message, "\n") {
		fmt.Println(escape(line))
	}
	return nil
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
		state := escape(s.State)
		if s.Reloading {
			state += " (reloading)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", escape(s.Label), state, pid, uptime, s.Restarts, rtt, last)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// What a service says of itself (notify, simple) and what is wrong
	// beside its state, one line each under the table, escaped.
	for _, s := range services {
		if s.Type != "" && s.Type != "sef" {
			line := fmt.Sprintf("%s: type %s", escape(s.Label), escape(s.Type))
			if s.StatusText != "" {
				line += ", status: " + escape(s.StatusText)
			}
			if s.NotifyRejected > 0 {
				line += fmt.Sprintf(", %d notify datagrams rejected", s.NotifyRejected)
			}
			if _, err := fmt.Fprintln(w, line); err != nil {
				return err
			}
		}
		if s.LogError != "" {
			if _, err := fmt.Fprintf(w, "%s: log writing fails, its output waits in its pipe: %s\n", escape(s.Label), escape(s.LogError)); err != nil {
				return err
			}
		}
	}
	return nil
}

func logsCommand() *cli.Command {
	return &cli.Command{
		Name: "logs", Usage: "show a service's log lines (every service's without a label)", ArgsUsage: "[<label>]",
		Description: "Prints the last lines of LOGDIR/<label>.log (and of its rotated files when it holds fewer),\n" +
			"as `<time> <out|err> <text>`; without a label every service's, merged by time, each line as\n" +
			"`<label> | <time> <out|err> <text>`. Control characters are escaped. With -f it goes on with\n" +
			"new lines as they come, across restarts, updates, rotation and rs's update-self, until\n" +
			"interrupted.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "then print new lines as they come"},
			&cli.StringFlag{Name: "lines", Aliases: []string{"n"}, Usage: "how many of the last lines (default 10; every line since --since)"},
			&cli.StringFlag{Name: "since", Usage: "only lines since then: a duration back from now (10m, 2h) or an RFC 3339 time"},
			&cli.BoolFlag{Name: "reopen", Usage: "have rs reopen every log file (after an external logrotate), print nothing"},
		},
		Action: logs,
	}
}

// logsRequest builds the logs request of the command line; now is the
// time --since counts back from.
func logsRequest(c *cli.Context, now time.Time) (control.Request, error) {
	if c.NArg() > 1 {
		return control.Request{}, afterLabel(c, 1)
	}
	req := control.Request{Op: control.OpLogs, Label: c.Args().First(), Follow: c.Bool("follow")}
	if c.IsSet("lines") {
		n, err := strconv.Atoi(c.String("lines"))
		if err != nil || n < 0 || n > control.MaxLogLines {
			return req, fmt.Errorf("logs: -n %q: want a number of lines from 0 to %d", c.String("lines"), control.MaxLogLines)
		}
		req.Lines = &n
	}
	if c.IsSet("since") {
		t, err := parseSince(c.String("since"), now)
		if err != nil {
			return req, fmt.Errorf("logs: --since: %w", err)
		}
		req.SinceUs = t.UnixMicro()
	}
	return req, nil
}

// parseSince reads --since: a duration back from now, or a time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q: a duration back from now is positive", s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			if t.Unix() < 0 {
				return time.Time{}, fmt.Errorf("%q: before 1970", s)
			}
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q: want a duration (10m, 2h) or a time (2026-12-02T03:45:00Z, 2026-12-02 03:45:00)", s)
}

// logLine is how one line shows: escaped, after its label when several
// services' lines are interleaved.
func logLine(l control.LogLine, labelled bool) string {
	if labelled {
		return escape(l.Label) + " | " + escape(l.Line)
	}
	return escape(l.Line)
}

func logs(c *cli.Context) error {
	if c.Bool("reopen") {
		for _, f := range []string{"follow", "lines", "since"} {
			if c.IsSet(f) {
				return fmt.Errorf("logs: --reopen takes no --%s", f)
			}
		}
		if c.NArg() > 0 {
			return fmt.Errorf("logs: --reopen reopens every service's file: no label")
		}
		return do(c, control.Request{Op: control.OpReopenLogs}, nil)
	}
	req, err := logsRequest(c, time.Now())
	if err != nil {
		return err
	}
	// Interrupted (the usual end of -f): the connection closes, rs stops
	// sending, and that is a success.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	w := bufio.NewWriterSize(os.Stdout, 64<<10)
	defer w.Flush()
	// A follow whose connection rs closed (update-self) asks again from a
	// little before the cut, and prints no line twice.
	var shown shownLines
	began := time.Now()
	again := func(req control.Request) control.Request {
		shown.again()
		since := shown.since()
		if since.IsZero() {
			since = began
		}
		req.Lines, req.SinceUs = nil, max(req.SinceUs, since.UnixMicro())
		return req
	}
	each := func(r control.Reply) error {
		if r.Message != "" {
			fmt.Fprintln(os.Stderr, "service: logs:", escape(r.Message))
		}
		for _, l := range r.Logs {
			if req.Follow && shown.printed(l) {
				continue
			}
			w.WriteString(logLine(l, req.Label == ""))
			w.WriteByte('\n')
		}
		return w.Flush()
	}
	var r control.Reply
	if req.Follow {
		r, err = streamResumed(ctx, client(c), "logs", req, again, each)
	} else {
		r, err = client(c).Stream(ctx, req, each)
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	if err == nil && r.Message != "" {
		fmt.Fprintln(os.Stderr, "service: logs:", escape(r.Message))
	}
	return err
}
