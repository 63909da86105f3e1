package rs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/reincarnation/rs/proc"
)

// Checks of a simple service (config `ready`, `probe`): one try of
// "tcp:HOST:PORT" connects and closes at once; one try of "exec:CMD ARGS"
// runs CMD and succeeds on exit 0. Tries run off the loop (simpledriver.go)
// and each is bounded: a dial by its timeout, a command by being killed
// with its whole process group (and its cgroup where rs has one) and
// reaped.
//
// The exec form is split on spaces and tabs. Single quotes keep what they
// enclose as it is; double quotes too, except that a backslash there
// escapes the next character; outside quotes a backslash escapes the next
// character. No variables, globs, pipes or redirections: there is no
// shell (write "exec:/bin/sh -c '...'" for one). CMD must be an absolute
// path: rs looks nothing up in a PATH.

// check is a parsed `ready` or `probe`.
type check struct {
	addr string   // tcp: HOST:PORT
	argv []string // exec: the command and its arguments
}

// checkPrefixes are the forms a check takes.
const (
	checkTCP  = "tcp:"
	checkExec = "exec:"
)

// parseCheck reads a `ready` or `probe` value; key names it in errors.
func parseCheck(key, v string) (*check, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s %q: %s", key, v, fmt.Sprintf(format, args...))
	}
	switch {
	case strings.ContainsRune(v, 0):
		return nil, bad("contains a NUL byte")
	case strings.HasPrefix(v, checkTCP):
		addr := v[len(checkTCP):]
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" {
			return nil, bad("want tcp:HOST:PORT")
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, bad("port %q: want 1 to 65535", port)
		}
		return &check{addr: addr}, nil
	case strings.HasPrefix(v, checkExec):
		argv, err := splitArgs(v[len(checkExec):])
		if err != nil {
			return nil, bad("%v", err)
		}
		if len(argv) == 0 {
			return nil, bad("no command: want exec:CMD ARGS")
		}
		if !filepath.IsAbs(argv[0]) {
			return nil, bad("command %q: path must be absolute", argv[0])
		}
		return &check{argv: argv}, nil
	}
	return nil, bad("want tcp:HOST:PORT or exec:CMD ARGS")
}

// splitArgs splits s as the package comment says.
func splitArgs(s string) ([]string, error) {
	var (
		args  []string
		cur   strings.Builder
		inArg bool // cur holds an argument, perhaps an empty quoted one
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case ' ', '\t':
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		case '\\':
			if i+1 == len(s) {
				return nil, errors.New("backslash at the end")
			}
			i++
			cur.WriteByte(s[i])
			inArg = true
		case '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, errors.New("unterminated single quote")
			}
			cur.WriteString(s[i+1 : i+1+end])
			i += 1 + end
			inArg = true
		case '"':
			closed := false
			for i++; i < len(s); i++ {
				if s[i] == '"' {
					closed = true
					break
				}
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				cur.WriteByte(s[i])
			}
			if !closed {
				return nil, errors.New("unterminated double quote")
			}
			inArg = true
		case '\n', '\r':
			return nil, errors.New("contains a line break")
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}

func (c *check) String() string {
	if c.argv != nil {
		return checkExec + strings.Join(c.argv, " ")
	}
	return checkTCP + c.addr
}

// checkLaunch is how an exec check's command is started: as the service
// is (launch): its environment (without the LISTEN_ variables of fds it
// does not get), user, groups, working directory and umask.
type checkLaunch struct {
	label string
	env   []string
	dir   string
	cred  *syscall.Credential
	umask *int
}

// checkLaunchOf is the checkLaunch of a service started as ps.
func checkLaunchOf(label string, ps proc.Spec) checkLaunch {
	var env []string
	for _, e := range ps.Env {
		if !strings.HasPrefix(e, "LISTEN_") {
			env = append(env, e)
		}
	}
	return checkLaunch{label: label, env: env, dir: ps.Dir, cred: ps.Credential, umask: ps.Umask}
}

// run makes one try, within timeout or until ctx ends, and says why it
// failed. It blocks: never call it on the loop.
func (c *check) run(ctx context.Context, timeout time.Duration, l checkLaunch) error {
	if c.argv == nil {
		d := net.Dialer{Timeout: timeout}
		conn, err := d.DialContext(ctx, "tcp", c.addr)
		if err != nil {
			return err
		}
		conn.Close()
		return nil
	}
	return c.exec(ctx, timeout, l)
}

// checkOutput bounds what rs keeps of an exec check's output: the end of
// it, for the line that says why it failed.
const checkOutput = 4096

// exec runs the command once. Its stdout and stderr go to one pipe; the
// last line it wrote comes with a failure.
func (c *check) exec(ctx context.Context, timeout time.Duration, l checkLaunch) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	p, err := proc.Start(proc.Spec{
		Path:       c.argv[0],
		Args:       c.argv[1:],
		Env:        l.env,
		Dir:        l.dir,
		Stdout:     w,
		Stderr:     w,
		Name:       l.label + ".check",
		Credential: l.cred,
		Umask:      l.umask,
	})
	w.Close()
	if err != nil {
		return err
	}
	out := make(chan []byte, 1)
	go func() { out <- readTail(r, checkOutput) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	var why error
	select {
	case <-p.Done():
	case <-t.C:
		why = fmt.Errorf("%s: no exit within %v, killed", c.argv[0], timeout)
	case <-ctx.Done():
		why = fmt.Errorf("%s: %w, killed", c.argv[0], context.Cause(ctx))
	}
	if why != nil {
		p.Kill()
		<-p.Done() // reaped, and its group (its cgroup) killed
	}
	// Every writer is dead now, unless a process left the group without a
	// cgroup to hold it: the read gets a bound.
	r.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	tail := <-out
	if why != nil {
		return why
	}
	e := p.Exit()
	if e.Success() {
		return nil
	}
	msg := "exit status " + strconv.Itoa(e.Code)
	if e.Signal != 0 {
		msg = "killed by " + e.String()
	}
	if line := lastLine(tail); line != "" {
		msg += ": " + line
	}
	return errors.New(msg)
}

// readTail reads r to its end (or an error) and returns its last n bytes.
func readTail(r io.Reader, n int) []byte {
	buf := make([]byte, 0, 2*n)
	chunk := make([]byte, n)
	for {
		k, err := r.Read(chunk)
		buf = append(buf, chunk[:k]...)
		if len(buf) > n {
			buf = append(buf[:0], buf[len(buf)-n:]...)
		}
		if err != nil {
			return buf
		}
	}
}

// maxCheckLine bounds the output line that goes into last_exit.
const maxCheckLine = 200

// lastLine is the last non-blank line of b, made printable and short: it
// comes from the checked program, and lands in status and rs's log.
func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	line := oneLineError(strings.TrimSpace(lines[len(lines)-1]))
	line = strings.ToValidUTF8(line, "?")
	if len(line) > maxCheckLine {
		cut := maxCheckLine
		for cut > 0 && !utf8.RuneStart(line[cut]) {
			cut--
		}
		line = line[:cut] + "..."
	}
	return line
}

// noStandby says why a service of type typ cannot have a warm standby
// (nil: it can). A standby waits in its init, which only sef has: any
// other program would run whole beside its instance.
func noStandby(typ string) error {
	switch typ {
	case TypeSimple:
		return errors.New("a simple service cannot have a standby (it has no init to wait in)")
	case TypeNotify:
		return errors.New("a notify service cannot be held as a warm standby (it runs its own start-up at once)")
	}
	return nil
}

// validateChecks checks a service's type and the settings of a simple
// one: those exist only for type simple, and a check must parse.
func validateChecks(s Spec) error {
	typ := cmp.Or(s.Type, TypeSef) // its value is control.CheckValue's (validateSpec)
	if err := noStandby(typ); err != nil && s.Standby {
		return specErrorf(s.Label, []string{"standby", "type"}, "standby: %v", err)
	}
	given := map[string]bool{"ready": s.Ready != "", "probe": s.Probe != "",
		"probe_period": s.ProbePeriod != 0, "probe_timeout": s.ProbeTimeout != 0}
	for _, key := range []string{"ready", "probe", "probe_period", "probe_timeout"} {
		if given[key] && typ != TypeSimple {
			return specErrorf(s.Label, []string{key, "type"}, `%s: only for type = "simple" (this service is type %s)`, key, typ)
		}
	}
	for _, c := range []struct{ key, v string }{{"ready", s.Ready}, {"probe", s.Probe}} {
		if c.v != "" {
			if _, err := parseCheck(c.key, c.v); err != nil {
				return specErrorf(s.Label, []string{c.key}, "%v", err)
			}
		}
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"probe_period", s.ProbePeriod}, {"probe_timeout", s.ProbeTimeout}} {
		switch {
		case d.v != 0 && s.Probe == "":
			return specErrorf(s.Label, []string{d.key}, "%s without a probe", d.key)
		case d.v > 0 && d.v < MinPeriod:
			return specErrorf(s.Label, []string{d.key}, "%s %v: shorter than %v, the least rs accepts", d.key, d.v, MinPeriod)
		}
	}
	if s.Probe != "" && s.probePeriod() <= 0 {
		return specErrorf(s.Label, []string{"probe", "period"}, "probe: no period to run it at (period is 0s): set probe_period")
	}
	return nil
}
