package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/reincarnation/rs/rs/control"
)

// escape leaves printable text alone and escapes the rest as Go quotes it.
func TestEscape(t *testing.T) {
	cases := map[string]string{
		"init failed: no database":   "init failed: no database",
		"naïve – ünïcode ✓":          "naïve – ünïcode ✓",
		"\x1b[8mhidden\x1b[0m":       `\x1b[8mhidden\x1b[0m`,
		"row\r\nforged  running":     `row\r\nforged  running`,
		"bell\a tab\t nul\x00":       `bell\a tab\t nul\x00`,
		"bidi \u202eevil":            `bidi \u202eevil`,
		"bad utf8 \xff\xfe":          `bad utf8 \xff\xfe`,
		"csi \u009b31m":              `csi \u009b31m`,
		`a backslash \ stays as one`: `a backslash \ stays as one`,
	}
	for in, want := range cases {
		if got := escape(in); got != want {
			t.Errorf("escape(%q) = %q, want %q", in, got, want)
		}
	}
}

// parseLogs runs the logs command's flags on args and returns the
// request it builds.
func parseLogs(t *testing.T, now time.Time, args ...string) (control.Request, error) {
	t.Helper()
	var req control.Request
	var rerr error
	cmd := logsCommand()
	cmd.Action = func(c *cli.Context) error {
		req, rerr = logsRequest(c, now)
		return nil
	}
	app := &cli.App{Name: "service", Commands: []*cli.Command{cmd}, Writer: io.Discard, ErrWriter: io.Discard}
	if err := app.Run(append([]string{"service", "logs"}, args...)); err != nil {
		return req, err
	}
	return req, rerr
}

// -n, --since and -f become the request's fields; what does not parse
// is refused before anything is sent.
func TestLogsFlags(t *testing.T) {
	now := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
	r, err := parseLogs(t, now, "kv")
	if err != nil || r.Op != control.OpLogs || r.Label != "kv" || r.Lines != nil || r.SinceUs != 0 || r.Follow {
		t.Fatalf("defaults: %+v, %v", r, err)
	}
	r, err = parseLogs(t, now)
	if err != nil || r.Label != "" {
		t.Fatalf("no label (every service): %+v, %v", r, err)
	}
	r, err = parseLogs(t, now, "-f", "-n", "0", "kv")
	if err != nil || !r.Follow || r.Lines == nil || *r.Lines != 0 {
		t.Fatalf("-f -n 0: %+v, %v", r, err)
	}
	r, err = parseLogs(t, now, "--follow", "--lines", "250", "kv")
	if err != nil || !r.Follow || *r.Lines != 250 {
		t.Fatalf("--follow --lines 250: %+v, %v", r, err)
	}
	for since, want := range map[string]time.Time{
		"10m":                         now.Add(-10 * time.Minute),
		"1h30m":                       now.Add(-90 * time.Minute),
		"2026-12-02T03:45:01.5Z":      time.Date(2026, 12, 2, 3, 45, 1, 500e6, time.UTC),
		"2026-12-02T05:45:00+02:00":   time.Date(2026, 12, 2, 3, 45, 0, 0, time.UTC),
		"2026-12-02 03:45:00":         time.Date(2026, 12, 2, 3, 45, 0, 0, time.Local),
		"2026-12-01":                  time.Date(2026, 12, 1, 0, 0, 0, 0, time.Local),
		"2026-12-02T03:45:00.123456Z": time.Date(2026, 12, 2, 3, 45, 0, 123456e3, time.UTC),
	} {
		r, err := parseLogs(t, now, "--since", since, "kv")
		if err != nil || r.SinceUs != want.UnixMicro() {
			t.Errorf("--since %s: %+v, %v; want %v", since, r, err, want)
		}
	}
	for _, args := range [][]string{
		{"-n", "-1", "kv"}, {"-n", "ten", "kv"}, {"-n", "100001", "kv"},
		{"--since", "yesterday", "kv"}, {"--since", "-5m", "kv"}, {"--since", "1960-01-01", "kv"},
		{"kv", "-f"}, {"kv", "other"}, {"--nope", "kv"},
	} {
		if r, err := parseLogs(t, now, args...); err == nil {
			t.Errorf("%q: taken as %+v", args, r)
		}
	}
}

// A log line is shown escaped, after its label when lines of every
// service are interleaved.
func TestLogLineShown(t *testing.T) {
	l := control.LogLine{Label: "kv", Line: "2026-12-02T03:45:01.123456Z out \x1b[2Jcleared\r\x07 ok ✓"}
	if got, want := logLine(l, false), `2026-12-02T03:45:01.123456Z out \x1b[2Jcleared\r\a ok ✓`; got != want {
		t.Errorf("one service: %q, want %q", got, want)
	}
	if got, want := logLine(l, true), `kv | 2026-12-02T03:45:01.123456Z out \x1b[2Jcleared\r\a ok ✓`; got != want {
		t.Errorf("every service: %q, want %q", got, want)
	}
}

// --reopen takes no other flag and no label.
func TestLogsReopenFlags(t *testing.T) {
	for _, args := range [][]string{{"--reopen", "-f"}, {"--reopen", "-n", "3"}, {"--reopen", "--since", "1m"}, {"--reopen", "kv"}} {
		app := &cli.App{Name: "service", Commands: []*cli.Command{logsCommand()}, Writer: io.Discard, ErrWriter: io.Discard}
		app.Flags = []cli.Flag{&cli.StringFlag{Name: "socket", Value: "/nonexistent/rs.sock"}}
		err := app.Run(append([]string{"service", "logs"}, args...))
		if err == nil || !strings.Contains(err.Error(), "--reopen") {
			t.Errorf("%q: %v, want a --reopen usage error", args, err)
		}
	}
}

// --reopen sends reopen-logs (rs's side is the capture's).
func TestLogsReopenSends(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "rs.sock")
	ln, err := control.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan control.Request, 1)
	srv := &control.Server{Handler: func(req control.Request, _ control.Peer, _ func(string)) control.Reply {
		got <- req
		return control.Reply{}
	}}
	go srv.Serve(ln)
	defer ln.Close()
	app := &cli.App{Name: "service", Commands: []*cli.Command{logsCommand()}, Writer: io.Discard, ErrWriter: io.Discard,
		Flags: []cli.Flag{&cli.StringFlag{Name: "socket"}, &cli.DurationFlag{Name: "timeout"}}}
	if err := app.Run([]string{"service", "--socket", sock, "logs", "--reopen"}); err != nil {
		t.Fatal(err)
	}
	if r := <-got; r.Op != control.OpReopenLogs || r.Label != "" {
		t.Fatalf("sent %+v", r)
	}
}
