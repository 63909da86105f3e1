package tests

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// Uids for the tests that need two other local users: a victim running
// its own rs, and a squatter.
const (
	victimUID  = 65531
	squatUID   = 65532
	nobodyUID  = 65534
	needsRoot  = "needs root to act as other local users"
	oldDefault = "/tmp/rs-%d.sock" // where rs used to listen by default
)

func asUID(uid int) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}, Pdeathsig: syscall.SIGKILL}
}

// sharedTmp makes a directory like /tmp (mode 1777) that other uids can
// reach, for $TMPDIR.
func sharedTmp(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(tmp, 0o1777)
	return tmp
}

// userEnv is the environment of a local user whose only runtime
// directory is tmp: no $XDG_RUNTIME_DIR, no $RS_SOCKET.
func userEnv(tmp string) []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "XDG_RUNTIME_DIR=") && !strings.HasPrefix(e, "RS_SOCKET=") && !strings.HasPrefix(e, "TMPDIR=") {
			env = append(env, e)
		}
	}
	return append(env, "TMPDIR="+tmp)
}

// startSquatter runs the squat role as uid on path; lines gets what it
// reports.
func startSquatter(t *testing.T, uid int, path string) <-chan string {
	t.Helper()
	cmd := exec.Command(bin("roles"), "-role", "squat", path)
	cmd.SysProcAttr = asUID(uid)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); os.Remove(path) })
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	if l := <-lines; l != "ready" {
		t.Fatalf("squatter on %s: %q", path, l)
	}
	return lines
}

// TestSocketSquatting: another local user cannot take rs's default socket.
// A squatter listening at the old default path (/tmp/rs-<uid>.sock) no
// longer stops the victim's rs, which listens in a directory of its own,
// mode 0700; whatever is planted where that directory goes (a symlink, a
// file, another user's directory, a directory open to others) makes rs
// exit with one line, and is left as it was.
func TestSocketSquatting(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip(needsRoot)
	}
	tmp := sharedTmp(t)
	env := userEnv(tmp)
	old := fmt.Sprintf(oldDefault, victimUID)
	os.Remove(old)
	startSquatter(t, squatUID, old)

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	rsCmd := exec.CommandContext(ctx, bin("rs"), "--log-dir", filepath.Join(tmp, "log"))
	rsCmd.Env, rsCmd.SysProcAttr = env, asUID(victimUID)
	var log syncBuffer
	rsCmd.Stdout, rsCmd.Stderr = &log, &log
	if err := rsCmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var rsErr error
	go func() { rsErr = rsCmd.Wait(); close(done) }()
	defer func() {
		rsCmd.Process.Signal(syscall.SIGTERM)
		<-done
		if t.Failed() {
			t.Logf("rs log:\n%s", log.String())
		}
	}()
	dir := filepath.Join(tmp, fmt.Sprintf("rs-%d", victimUID))
	sock := filepath.Join(dir, "rs.sock")
	// service, as the victim, with the default socket.
	victimService := func(args ...string) (string, string, int) {
		cmd := exec.CommandContext(ctx, bin("service"), args...)
		cmd.Env, cmd.SysProcAttr = env, asUID(victimUID)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return out.String(), errb.String(), ee.ExitCode()
		}
		return out.String(), errb.String(), 0
	}
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case <-done:
			t.Fatalf("rs of uid %d with a squatter on %s: exited (%v)", victimUID, old, rsErr)
		case <-ctx.Done():
			t.Fatalf("no socket at %s", sock)
		default:
		}
		syscall.Nanosleep(&syscall.Timespec{Nsec: 5e6}, nil)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(dir, &st); err != nil || st.Uid != victimUID || st.Mode&0o7777 != 0o700 || st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		t.Fatalf("runtime dir %s: uid %d mode %o, %v", dir, st.Uid, st.Mode, err)
	}
	out, errs, code := victimService("status")
	if code != 0 || !strings.HasPrefix(out, "LABEL") || strings.Count(out, "\n") != 1 {
		t.Fatalf("victim's status: exit %d, %q %q", code, out, errs)
	}
	if _, errs, code := victimService("--socket", old, "status"); code == 0 || !strings.Contains(errs, fmt.Sprintf("served by uid %d", squatUID)) {
		t.Fatalf("victim's status at the squatted path: exit %d, %q", code, errs)
	}
	rsCmd.Process.Signal(syscall.SIGTERM)
	<-done

	// Planted where the directory goes.
	own := func(p string, uid, mode int) {
		os.Chown(p, uid, uid)
		os.Chmod(p, os.FileMode(mode))
	}
	cases := []struct {
		name  string
		plant func(p string)
		want  string
	}{
		{"symlink", func(p string) {
			target := filepath.Join(tmp, "elsewhere")
			os.Mkdir(target, 0o700)
			own(target, victimUID, 0o700)
			os.Symlink(target, p)
			os.Lchown(p, squatUID, squatUID)
		}, "is a symlink"},
		{"file", func(p string) { os.WriteFile(p, nil, 0o644); own(p, squatUID, 0o644) }, "is not a directory"},
		{"other uid", func(p string) { os.Mkdir(p, 0o700); own(p, squatUID, 0o700) }, fmt.Sprintf("owned by uid %d", squatUID)},
		{"open mode", func(p string) { os.Mkdir(p, 0o755); own(p, victimUID, 0o755) }, "mode 0755, want 0700"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tmp := sharedTmp(t)
			p := filepath.Join(tmp, fmt.Sprintf("rs-%d", victimUID))
			c.plant(p)
			var before syscall.Stat_t
			syscall.Lstat(p, &before)
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin("rs"), "--log-dir", filepath.Join(tmp, "log"))
			cmd.Env, cmd.SysProcAttr = userEnv(tmp), asUID(victimUID)
			var errb bytes.Buffer
			cmd.Stderr = &errb
			err := cmd.Run()
			lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
			if err == nil || ctx.Err() != nil || len(lines) != 1 || !strings.Contains(lines[0], c.want) || !strings.Contains(lines[0], p) {
				t.Fatalf("rs with a planted %s: %v, stderr %q, want one line with %q", c.name, err, errb.String(), c.want)
			}
			var after syscall.Stat_t
			syscall.Lstat(p, &after)
			if after.Uid != before.Uid || after.Mode != before.Mode {
				t.Errorf("rs changed the planted %s: uid %d mode %o, was uid %d mode %o", c.name, after.Uid, after.Mode, before.Uid, before.Mode)
			}
		})
	}
}

// TestClientChecksServer: `service` sends nothing to a socket served by
// another uid: `up --args "--db-password ..."` must not reach a squatter.
// A socket it may not reach is "permission denied", not "not running".
func TestClientChecksServer(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip(needsRoot)
	}
	tmp := sharedTmp(t)
	sock := filepath.Join(tmp, "rs.sock")
	lines := startSquatter(t, squatUID, sock)
	for _, uid := range []int{victimUID, 0} {
		_, errs, code := runService(t, sock, &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)},
			"up", "--binary", bin("kv"), "--args", "--db-password hunter2", "kv")
		if code == 0 || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.Contains(errs, fmt.Sprintf("served by uid %d", squatUID)) {
			t.Fatalf("uid %d: service at a squatted socket: exit %d, %q", uid, code, errs)
		}
		if got := <-lines; got != "got 0" {
			t.Fatalf("uid %d: the squatter %s", uid, got)
		}
	}
	// A socket in a directory nobody may enter.
	r := startRS(t, "")
	_, errs, code := runService(t, r.sock, &syscall.Credential{Uid: nobodyUID, Gid: nobodyUID}, "status")
	if code == 0 || !strings.Contains(errs, "permission denied") || strings.Contains(errs, "not running") {
		t.Fatalf("nobody, socket behind a closed directory: exit %d, %q", code, errs)
	}
}

// TestStoppedRSTimesOut: a stopped rs makes `service` fail after its
// bound with one line, whatever the command, and --timeout sets the
// bound.
func TestStoppedRSTimesOut(t *testing.T) {
	r := startRS(t, "[service.p]\nbinary = \"$BIN/roles\"\nargs = [\"-role\", \"plain\"]\n")
	r.waitState("p", control.StateRunning, 0)
	r.cmd.Process.Signal(syscall.SIGSTOP)
	defer r.cmd.Process.Signal(syscall.SIGCONT)
	// At once: each waits out its own bound (5s for the first two).
	var wg sync.WaitGroup
	for _, args := range [][]string{{"status"}, {"down", "p"}, {"--timeout", "300ms", "restart", "p"}} {
		wg.Go(func() {
			_, errs, code := r.service(args...)
			lines := strings.Split(strings.TrimSpace(errs), "\n")
			if code == 0 || len(lines) != 1 || !strings.Contains(lines[0], "timed out") {
				t.Errorf("service %v against a stopped rs: exit %d, %q", args, code, errs)
			}
		})
	}
	wg.Wait()
	r.cmd.Process.Signal(syscall.SIGCONT)
	if st := r.status("p"); st.State != control.StateRunning && st.State != control.StateStopping && st.State != control.StateDown {
		t.Errorf("p after rs resumed: %+v", st)
	}
}

// TestServiceCannotDriveRS: a process in a service's tree that has not
// even finished its init cannot take another service down or start one,
// unless its config says control = true.
func TestServiceCannotDriveRS(t *testing.T) {
	cfg := `
[service.other]
binary = "$BIN/roles"
args = ["-role", "plain"]

[service.ctl]
binary = "$BIN/roles"
args = ["-role", "controller", "$DIR/down.out", "$BIN/service", "--socket", "$DIR/rs.sock", "down", "other"]

[service.ctl2]
binary = "$BIN/roles"
args = ["-role", "controller", "$DIR/up.out", "$BIN/service", "--socket", "$DIR/rs.sock", "up", "--binary", "$BIN/roles", "--args", "-role plain", "intruder"]
`
	outs := []string{"down.out", "up.out"}
	if hostHasCgroup2(t) {
		// A child that left the service's process group is still in
		// its cgroup.
		cfg += `
[service.ctl3]
binary = "$BIN/roles"
args = ["-role", "controller-setsid", "$DIR/setsid.out", "$BIN/service", "--socket", "$DIR/rs.sock", "down", "other"]
`
		outs = append(outs, "setsid.out")
	}
	r := startRS(t, cfg)
	r.waitState("other", control.StateRunning, 0)
	for _, out := range outs {
		var got []byte
		r.waitFor(out, func() bool {
			var err error
			got, err = os.ReadFile(filepath.Join(r.dir, out))
			return err == nil
		})
		if !strings.HasPrefix(string(got), "exit 1\n") || !strings.Contains(string(got), "may not control rs") || strings.Count(string(got), "\n") != 2 {
			t.Errorf("%s: a service's own command was not refused: %q", out, got)
		}
	}
	r.waitState("ctl", control.StateRunning, 0)
	r.waitState("ctl2", control.StateRunning, 0)
	if st := r.status("other"); st.State != control.StateRunning {
		t.Errorf("other after a refused down: %+v", st)
	}
	if _, _, code := r.service("status", "intruder"); code == 0 {
		t.Errorf("a refused up added intruder")
	}
	// The operator is still served, from outside any service.
	r.mustService("status")

	// With control = true the same service may.
	r2 := startRS(t, strings.Replace(strings.Split(cfg, "[service.ctl2]")[0], "\"down\", \"other\"]\n", "\"down\", \"other\"]\ncontrol = true\n", 1))
	r2.waitFor("ctl's command", func() bool {
		_, err := os.Stat(filepath.Join(r2.dir, "down.out"))
		return err == nil
	})
	got, _ := os.ReadFile(filepath.Join(r2.dir, "down.out"))
	if !strings.HasPrefix(string(got), "exit 0\n") {
		t.Fatalf("with control = true: %q", got)
	}
	if st := r2.status("other"); st.State != control.StateDown {
		t.Errorf("other after an allowed down: %+v", st)
	}
}

// TestConnectionFlood: 3000 control connections held open from one uid
// leave rs's fds, goroutines and memory bounded, and a status request
// is still answered at once.
func TestConnectionFlood(t *testing.T) {
	r := startRS(t, "")
	before, err := r.client().Do(control.Request{Op: control.OpStatus}, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	deadline := time.Now().Add(waitTimeout)
	for len(conns) < n {
		c, err := net.Dial("unixpacket", r.sock)
		if errors.Is(err, syscall.EAGAIN) {
			if time.Now().After(deadline) {
				t.Fatalf("connection %d: the backlog stayed full for %v", len(conns), waitTimeout)
			}
			continue // the backlog is full for a moment: rs is making room
		}
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns), err)
		}
		deadline = time.Now().Add(waitTimeout) // bounds a stall, not the flood
		conns = append(conns, c)
	}
	after, err := r.client().Do(control.Request{Op: control.OpStatus}, nil)
	if err != nil {
		t.Fatalf("status during a flood of %d connections: %v", n, err)
	}
	b, a := before.Daemon, after.Daemon
	t.Logf("rs before/after %d connections: fds %d/%d, goroutines %d/%d, rss %d/%d KiB", n, b.FDs, a.FDs, b.Goroutines, a.Goroutines, b.RSSKiB, a.RSSKiB)
	if a.FDs > b.FDs+control.DefaultMaxConns+8 {
		t.Errorf("rs holds %d fds with %d connections open, %d before", a.FDs, n, b.FDs)
	}
	if a.Goroutines > b.Goroutines+2*control.DefaultMaxConns+8 {
		t.Errorf("rs runs %d goroutines with %d connections open, %d before", a.Goroutines, n, b.Goroutines)
	}
	if a.RSSKiB > b.RSSKiB+32<<10 {
		t.Errorf("rs grew from %d to %d KiB with %d connections open", b.RSSKiB, a.RSSKiB, n)
	}
	if strings.Contains(r.log.String(), "too many open files") {
		t.Errorf("rs ran out of fds")
	}
}

// TestOperatorIO: what a service says reaches the operator's terminal
// escaped; command-line mistakes get one line each.
func TestOperatorIO(t *testing.T) {
	forged := "\x1b[8mhidden\x1b[0m\r\nkv      running  1  1h  0  -  -\x07"
	toml := strings.NewReplacer("\x1b", `\u001b`, "\r", `\r`, "\n", `\n`, "\x07", `\u0007`).Replace(forged)
	r := startRS(t, "[service.evil]\nbinary = \"$BIN/roles\"\nargs = [\"-role\", \"fail-init-msg\", \""+toml+"\"]\n")
	r.waitState("evil", control.StateFailed, 0)
	out := r.mustService("status")
	if strings.ContainsAny(out, "\x1b\r\x07") || strings.Count(out, "\n") != 2 || !strings.Contains(out, `\x1b[8mhidden`) || !strings.Contains(out, `\r\nkv`) {
		t.Errorf("status table with a service's text:\n%q", out)
	}
	_, errs, code := r.service("restart", "evil")
	if code == 0 || strings.ContainsAny(errs, "\x1b\r\x07") || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, `\x1b[8m`) {
		t.Errorf("restart of a service whose init fails: exit %d, %q", code, errs)
	}

	none := filepath.Join(t.TempDir(), "none.sock") // checks come before rs is asked
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"stauts"}, "unknown command: stauts"},
		{[]string{"update", "--state", "x", "kv"}, `invalid value "x" for flag -state`},
		{[]string{"up", "--period", "soon", "kv"}, `--period "soon"`},
		{[]string{"status", "--jsn"}, "flag provided but not defined: -jsn"},
		{[]string{"up", "--binary", bin("kv"), "--memory", "0", "kv"}, `service "kv": memory 0: want a positive number of bytes`},
		{[]string{"up", "--binary", bin("kv"), "--cpu-time", "-1s", "kv"}, `service "kv": cpu_time "-1s": negative duration`},
		{[]string{"up", "--binary", bin("kv"), "--period", "1ns", "kv"}, "period 1ns: shorter than 10ms"},
		{[]string{"status", "kv", "--json"}, `flags go before the label: "--json"`},
		{[]string{"down", "kv", "--now"}, `flags go before the label: "--now"`},
		{[]string{"--timeout", "x", "status"}, `invalid value "x" for flag -timeout`},
	}
	for _, c := range cases {
		out, errs, code := runService(t, none, nil, c.args...)
		lines := strings.Split(strings.TrimSpace(errs), "\n")
		if code == 0 || out != "" || len(lines) != 1 || !strings.HasPrefix(lines[0], "service: ") || !strings.Contains(lines[0], c.want) {
			t.Errorf("service %q: exit %d, stdout %d lines, stderr %q; want one line with %q", c.args, code, strings.Count(out, "\n"), errs, c.want)
		}
	}
	if out, _, code := runService(t, none, nil, "help"); code != 0 || !strings.Contains(out, "COMMANDS") {
		t.Errorf("service help: exit %d, %q", code, out)
	}
}

// TestHelpAgreesWithREADME: the socket's default place and --state's
// meaning read the same in --help and in the README.
func TestHelpAgreesWithREADME(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	help := func(name string, args ...string) string {
		cmd := exec.Command(bin(name), args...)
		cmd.Stderr = io.Discard
		out, _ := cmd.Output()
		return strings.Join(strings.Fields(string(out)), " ")
	}
	text := strings.ReplaceAll(strings.Join(strings.Fields(string(readme)), " "), "`", "")
	for _, h := range []string{help("rs", "--help"), help("service", "--help")} {
		for _, want := range []string{"$RS_SOCKET", "$XDG_RUNTIME_DIR/rs", "/run/rs for root", "$TMPDIR/rs-<uid>"} {
			if !strings.Contains(h, want) || !strings.Contains(text, want) {
				t.Errorf("%q: in help %v, in README %v", want, strings.Contains(h, want), strings.Contains(text, want))
			}
		}
	}
	upd := help("service", "update", "--help")
	for _, want := range []string{"1 work-free, 2 request-free, 3 protocol-free, 4+ custom", "(default: 1)"} {
		if !strings.Contains(upd, want) || !strings.Contains(text, want) {
			t.Errorf("--state %q: in help %v, in README %v", want, strings.Contains(upd, want), strings.Contains(text, want))
		}
	}
}
