// Command service is the operator's command for rs: it builds one request,
// sends it to rs's control socket and prints the reply.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/reincarnation/rs/rs"
)

func main() {
	app := &cli.App{
		Name:      "service",
		Usage:     "control the services of rs",
		UsageText: "service [--socket PATH] <command> [flags] <label>",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "socket", Usage: "rs control socket (default $RS_SOCKET, else " + rs.DefaultSocket() + ")"},
		},
		HideHelpCommand: true,
		Commands: []*cli.Command{
			{
				Name: "up", Usage: "start a service; returns when its init succeeded", ArgsUsage: "<label>",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "binary", Usage: "path of the binary (required for a new label)"},
					&cli.StringFlag{Name: "args", Usage: `arguments, split on spaces: "A B"`},
					&cli.DurationFlag{Name: "period", Usage: "ping period; 0s disables pings (default 1s)"},
					&cli.StringFlag{Name: "restart", Usage: "always | on-failure | never"},
					&cli.StringFlag{Name: "depends", Usage: "labels to depend on: L1,L2"},
					&cli.StringFlag{Name: "memory", Usage: "memory limit (RLIMIT_DATA), e.g. 256MiB"},
					&cli.Uint64Flag{Name: "open-files", Usage: "open files limit (RLIMIT_NOFILE)"},
					&cli.DurationFlag{Name: "cpu-time", Usage: "CPU time limit (RLIMIT_CPU), e.g. 10m"},
				},
				Action: up,
			},
			{Name: "down", Usage: "stop a service; it stays down until up", ArgsUsage: "<label>", Action: simple(rs.OpDown)},
			{Name: "restart", Usage: "stop and start again; clears failed and backoff", ArgsUsage: "<label>", Action: simple(rs.OpRestart)},
			{
				Name: "update", Usage: "live update to a new binary", ArgsUsage: "<label>",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "binary", Usage: "new binary (default: the current one)"},
					&cli.IntFlag{Name: "state", Value: 1, Usage: "state to reach first: 1 work-free, 2 request-free, 3 protocol-free, 4+ custom"},
					&cli.DurationFlag{Name: "maxtime", Value: 2 * time.Second, Usage: "how long the service may take to get ready"},
					&cli.BoolFlag{Name: "quiet", Usage: "do not print the update's steps"},
				},
				Action: update,
			},
			{Name: "clone", Usage: "keep a warm standby instance", ArgsUsage: "<label>", Action: simple(rs.OpClone)},
			{Name: "unclone", Usage: "drop the standby instance", ArgsUsage: "<label>", Action: simple(rs.OpUnclone)},
			{
				Name: "status", Usage: "show the services", ArgsUsage: "[<label>]",
				Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
				Action: status,
			},
			{Name: "shutdown", Usage: "stop every service, then rs exits", Action: shutdown},
		},
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "service:", err)
		os.Exit(1)
	}
}

func client(c *cli.Context) rs.Client {
	sock := c.String("socket")
	if sock == "" {
		sock = rs.DefaultSocket()
	}
	return rs.Client{Socket: sock}
}

// label returns the one positional argument, the label.
func label(c *cli.Context) (string, error) {
	switch c.NArg() {
	case 1:
		return c.Args().First(), nil
	case 0:
		return "", fmt.Errorf("%s: missing <label>", c.Command.Name)
	}
	return "", fmt.Errorf("%s: one <label> expected, got %q (flags go before the label)", c.Command.Name, c.Args().Slice())
}

func do(c *cli.Context, req rs.Request, progress func(string)) error {
	r, err := client(c).Do(req, progress)
	if err != nil {
		return err
	}
	if r.Message != "" {
		fmt.Println(r.Message)
	}
	return nil
}

func simple(op string) cli.ActionFunc {
	return func(c *cli.Context) error {
		l, err := label(c)
		if err != nil {
			return err
		}
		return do(c, rs.Request{Op: op, Label: l}, nil)
	}
}

func up(c *cli.Context) error {
	l, err := label(c)
	if err != nil {
		return err
	}
	req := rs.Request{Op: rs.OpUp, Label: l, Restart: c.String("restart")}
	if b := c.String("binary"); b != "" {
		if req.Binary, err = filepath.Abs(b); err != nil {
			return err
		}
	}
	if c.IsSet("args") {
		req.Args, req.HasArgs = strings.Fields(c.String("args")), true
	}
	if c.IsSet("period") {
		req.Period, req.HasPeriod = c.Duration("period"), true
	}
	if m := c.String("memory"); m != "" {
		if req.Memory, err = rs.ParseBytes(m); err != nil {
			return err
		}
	}
	req.OpenFiles = c.Uint64("open-files")
	req.CPUTime = c.Duration("cpu-time")
	if d := c.String("depends"); d != "" {
		for _, dep := range strings.Split(d, ",") {
			if dep = strings.TrimSpace(dep); dep != "" {
				req.Depends = append(req.Depends, dep)
			}
		}
	}
	return do(c, req, nil)
}

func update(c *cli.Context) error {
	l, err := label(c)
	if err != nil {
		return err
	}
	req := rs.Request{Op: rs.OpUpdate, Label: l, State: c.Int("state"), MaxTime: c.Duration("maxtime")}
	if b := c.String("binary"); b != "" {
		if req.Binary, err = filepath.Abs(b); err != nil {
			return err
		}
	}
	progress := func(p string) { fmt.Fprintln(os.Stderr, p) }
	if c.Bool("quiet") {
		progress = nil
	}
	return do(c, req, progress)
}

func shutdown(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("shutdown takes no label")
	}
	return do(c, rs.Request{Op: rs.OpShutdown}, nil)
}

func status(c *cli.Context) error {
	if c.NArg() > 1 {
		return fmt.Errorf("status: at most one <label>")
	}
	r, err := client(c).Do(rs.Request{Op: rs.OpStatus, Label: c.Args().First()}, nil)
	if err != nil {
		return err
	}
	if r.Services == nil {
		r.Services = []rs.Status{}
	}
	if c.Bool("json") {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Services []rs.Status `json:"services"`
			RS       *rs.Daemon  `json:"rs,omitempty"`
		}{r.Services, r.Daemon})
	}
	return table(os.Stdout, r.Services)
}

func table(w io.Writer, services []rs.Status) error {
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
		last := s.LastExit
		if last == "" {
			last = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.Label, s.State, pid, uptime, s.Restarts, rtt, last)
	}
	return tw.Flush()
}
