package tests

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// Services of type simple: tests/fixtures/plain, a daemon that knows
// nothing of rs, with ready checks and probes.

// pingPlain asks a plain server at addr ("unix:PATH" or host:port) for PONG.
func pingPlain(addr string) error {
	netw, a := "tcp", addr
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		netw, a = "unix", p
	}
	c, err := net.DialTimeout(netw, a, waitTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitTimeout))
	fmt.Fprintf(c, "PING\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "PONG\n" {
		return fmt.Errorf("answer %q, %v", line, err)
	}
	return nil
}

// upAsync runs `service up args...` and returns a channel with its exit
// code and stderr once it returns.
func (r *rsProc) upAsync(args ...string) <-chan [2]string {
	done := make(chan [2]string, 1)
	cmd := exec.Command(bin("service"), append([]string{"--socket", r.sock, "up"}, args...)...)
	var errb strings.Builder
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	go func() {
		err := cmd.Wait()
		code := "0"
		if err != nil {
			code = err.Error()
		}
		done <- [2]string{code, errb.String()}
	}()
	r.t.Cleanup(func() { cmd.Process.Kill() })
	return done
}

// TestSimpleReadyTCP: `service up` of a simple service with a tcp ready
// check returns only once its port answers, not when its process runs.
func TestSimpleReadyTCP(t *testing.T) {
	r := startRS(t, "")
	addr := freeAddr(t)
	gate := filepath.Join(r.dir, "go")
	done := r.upAsync("--binary", bin("plain"), "--type", "simple", "--ready", "tcp:"+addr,
		"--args", "-listen "+addr+" -after "+gate, "web")
	var st control.Status
	r.waitFor("web's process", func() bool {
		rep, err := r.client().Do(control.Request{Op: control.OpStatus, Label: "web"}, nil)
		if err != nil || len(rep.Services) == 0 {
			return false // not added yet
		}
		st = rep.Services[0]
		return st.Pid != 0
	})
	if st.State != control.StateStarting {
		t.Fatalf("before its port answers: %s, want starting", st.State)
	}
	select {
	case res := <-done:
		t.Fatalf("service up returned before the port answered: %v", res)
	default:
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		if res[0] != "0" {
			t.Fatalf("service up: %s: %s", res[0], res[1])
		}
	case <-time.After(waitTimeout):
		t.Fatal("service up did not return once the port answered")
	}
	if err := pingPlain(addr); err != nil {
		t.Fatalf("service up returned, but %s does not answer: %v", addr, err)
	}
	if got := r.status("web"); got.State != control.StateRunning || got.Pid != st.Pid {
		t.Fatalf("after up: %+v; want running, pid %d", got, st.Pid)
	}
}

// TestSimpleReadyExecAndCrash: a ready check by a command (the fixture as
// a client of its own unix socket); a simple service without a probe is
// running while its process lives and is reincarnated when it dies.
func TestSimpleReadyExecAndCrash(t *testing.T) {
	r := startRS(t, `
[service.u]
binary = "$BIN/plain"
type = "simple"
args = ["-listen", "unix:$DIR/u.sock", "-after", "$DIR/go"]
ready = "exec:$BIN/plain -check unix:$DIR/u.sock"
init_timeout = "20s"
`)
	st := r.waitFor2("u", func(st control.Status) bool { return st.Pid != 0 })
	if st.State != control.StateStarting {
		t.Fatalf("before its socket answers: %s, want starting", st.State)
	}
	os.WriteFile(filepath.Join(r.dir, "go"), nil, 0o644)
	st = r.waitState("u", control.StateRunning, 0)
	if err := pingPlain("unix:" + filepath.Join(r.dir, "u.sock")); err != nil {
		t.Fatalf("running, but its socket does not answer: %v", err)
	}
	if st.PingRTTUs != 0 {
		t.Errorf("a simple service without a probe was pinged: rtt %dus", st.PingRTTUs)
	}
	syscall.Kill(st.Pid, syscall.SIGKILL)
	st2 := r.waitState("u", control.StateRunning, st.Pid)
	if st2.Restarts != 1 || st2.LastExit != "terminated: SIGKILL" {
		t.Errorf("after kill -9: restarts %d, last_exit %q; want 1, terminated: SIGKILL", st2.Restarts, st2.LastExit)
	}
	r.mustService("down", "u")
	if alive(st2.Pid) {
		t.Errorf("pid %d alive after down", st2.Pid)
	}
}

// TestSimpleNeverReady: a ready check that never succeeds fails the start
// at init_timeout, with the check's last failure as the reason.
func TestSimpleNeverReady(t *testing.T) {
	r := startRS(t, "")
	addr := freeAddr(t) // nothing listens there
	_, errs, code := r.service("up", "--binary", bin("plain"), "--type", "simple", "--ready", "tcp:"+addr,
		"--init-timeout", "300ms", "--args", "-listen 127.0.0.1:0 -after /nonexistent", "never")
	want := "init-timeout: ready check: dial tcp " + addr + ": connect: connection refused"
	if code == 0 || !strings.Contains(errs, want) {
		t.Fatalf("service up: exit %d, %q; want a failure with %q", code, errs, want)
	}
	st := r.status("never")
	if st.State != control.StateFailed || st.LastExit != want || st.Pid != 0 {
		t.Fatalf("status %+v; want failed, last_exit %q", st, want)
	}
}

// TestSimpleProbeFails: a tcp probe that is refused reincarnates the
// service, last_exit probe-failed with the dial's error.
func TestSimpleProbeFails(t *testing.T) {
	r := startRS(t, "")
	addr := freeAddr(t)
	r.mustService("up", "--binary", bin("plain"), "--type", "simple", "--ready", "tcp:"+addr,
		"--probe", "tcp:"+addr, "--probe-period", "20ms", "--probe-timeout", "1s",
		"--args", "-listen "+addr+" -answers 4", "web")
	first := r.status("web")
	st := r.waitFor2("web", func(st control.Status) bool { return st.Restarts >= 1 })
	want := "probe-failed: dial tcp " + addr + ": connect: connection refused"
	if st.LastExit != want {
		t.Fatalf("last_exit %q, want %q", st.LastExit, want)
	}
	st = r.waitState("web", control.StateRunning, first.Pid)
	if alive(first.Pid) {
		t.Errorf("the instance whose probe failed (pid %d) is alive", first.Pid)
	}
	if err := pingPlain(addr); err != nil && r.status("web").Pid == st.Pid {
		t.Errorf("reincarnated instance does not answer: %v", err)
	}

	// An exec probe that fails: its exit status and the last line it
	// wrote.
	addr2 := freeAddr(t)
	r.mustService("up", "--binary", bin("plain"), "--type", "simple",
		"--probe", "exec:"+bin("plain")+" -check "+addr2, "--probe-period", "20ms",
		"--args", "-listen "+addr2+" -answers 2", "ex")
	st = r.waitFor2("ex", func(st control.Status) bool { return st.Restarts >= 1 })
	want = "probe-failed: exit status 1: check: dial tcp " + addr2 + ": connect: connection refused"
	if st.LastExit != want {
		t.Fatalf("last_exit %q, want %q", st.LastExit, want)
	}
}

// TestSimpleHangingProbeKilled: an exec probe that hangs (and left a child
// of its own behind) is killed at probe_timeout with every process it
// made, and reaped; rs keeps no fd of it.
func TestSimpleHangingProbeKilled(t *testing.T) {
	r := startRS(t, "")
	rsPid := r.cmd.Process.Pid
	addr := freeAddr(t)
	marker := "hang-marker-" + strconv.Itoa(os.Getpid()) + "-" + filepath.Base(r.dir)
	base := fdCount(t, rsPid)
	r.mustService("up", "--binary", bin("plain"), "--type", "simple", "--ready", "tcp:"+addr,
		"--probe", "exec:"+bin("plain")+" -check "+addr+" -fork "+marker,
		"--probe-period", "50ms", "--probe-timeout", "300ms", "--restart", "never",
		"--args", "-listen "+addr+" -hang-accept", "hang")
	r.waitFor("a probe to run", func() bool { return len(withMarker(marker)) >= 2 })
	// probe_timeout spans six probe periods: still one probe at a time
	// (its command and the child it left: two processes).
	most := 0
	st := r.waitFor2("hang", func(st control.Status) bool {
		most = max(most, len(withMarker(marker)))
		return st.State == control.StateDown
	})
	if most > 2 {
		t.Errorf("%d processes of probes at once; want one probe (2 processes) at a time", most)
	}
	want := "probe-failed: " + bin("plain") + ": no exit within 300ms, killed"
	if st.LastExit != want {
		t.Fatalf("last_exit %q, want %q", st.LastExit, want)
	}
	// The verdict comes after the probe's kill and reaping; the child
	// it left is in its cgroup (or group), killed with it.
	r.waitFor("the probe's processes to go", func() bool { return len(withMarker(marker)) == 0 })
	if all, zombies := children(rsPid); len(zombies) > 0 {
		t.Errorf("rs has unreaped children: %v of %v", zombies, all)
	}
	fdsBackTo(t, rsPid, base, "after a hung probe was killed")
}

// withMarker lists live processes whose command line holds marker.
func withMarker(marker string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(b), marker) && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestSimpleConfigErrors: the simple settings only with type simple, and
// a malformed check, are one-line errors from the config file (file:line)
// and from `service up`.
func TestSimpleConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ cfg, want string }{
		{"[service.a]\nbinary = \"/bin/true\"\n\nprobe = \"tcp:127.0.0.1:1\"\n",
			`:4: service "a": probe: only for type = "simple" (this service is type sef)`},
		{"[service.a]\nbinary = \"/bin/true\"\ntype = \"simple\"\nready = \"exec:sh -c true\"\n",
			`:4: service "a": ready "exec:sh -c true": command "sh": path must be absolute`},
		{"[service.a]\nbinary = \"/bin/true\"\ntype = \"simple\"\nready = \"tcp:localhost\"\n",
			`:4: service "a": ready "tcp:localhost": want tcp:HOST:PORT`},
	} {
		path := filepath.Join(dir, "bad.toml")
		os.WriteFile(path, []byte(c.cfg), 0o644)
		out, err := exec.Command(bin("rs"), "--config", path, "--socket", filepath.Join(dir, "s.sock"),
			"--log-dir", filepath.Join(dir, "log")).CombinedOutput()
		msg := strings.TrimSpace(string(out))
		if err == nil || strings.Count(msg, "\n") != 0 || !strings.Contains(msg, path+c.want) {
			t.Errorf("rs said %q (%v); want one line with %q", msg, err, path+c.want)
		}
	}
	r := startRS(t, "")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--ready", "tcp:127.0.0.1:1"}, `ready: only for type = "simple"`},
		{[]string{"--type", "simple", "--probe", "exec:'/bin/true"}, "unterminated single quote"},
		{[]string{"--type", "simple", "--probe-timeout", "1s"}, "probe_timeout without a probe"},
		{[]string{"--type", "forking"}, `type "forking": want sef, notify or simple`},
	} {
		_, errs, code := r.service(append(append([]string{"up", "--binary", bin("plain")}, c.args...), "x")...)
		if code == 0 || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.Contains(errs, c.want) {
			t.Errorf("up %v: exit %d, %q; want one line with %q", c.args, code, errs, c.want)
		}
	}
}

// TestSimpleStopUpdateClone: a passing exec probe keeps a simple service
// running and gives its ping round trip; `service down` sends a simple service its
// stop signal at once (not after stop_grace, here longer than any wait of
// the test); `service clone` is refused with one line, and the instance
// keeps running.
func TestSimpleStopClone(t *testing.T) {
	r := startRS(t, "")
	sock := filepath.Join(r.dir, "s.sock")
	r.mustService("up", "--binary", bin("plain"), "--type", "simple", "--ready", "exec:"+bin("plain")+" -check unix:"+sock,
		"--probe", "exec:"+bin("plain")+" -check unix:"+sock, "--probe-period", "20ms",
		"--stop-grace", "1m", "--args", "-listen unix:"+sock+" -trap", "s")
	st := r.status("s")
	// A probe that passes answers rs's pings: its time is the round trip,
	// and the instance stays.
	got := r.waitFor2("s", func(st control.Status) bool { return st.PingRTTUs > 0 })
	if got.Pid != st.Pid || got.Restarts != 0 || got.State != control.StateRunning {
		t.Fatalf("with a passing probe: %+v; want running, pid %d, no restart", got, st.Pid)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"clone", "s"}, "s: a simple service cannot have a standby (it has no init to wait in)"},
	} {
		_, errs, code := r.service(c.args...)
		if code == 0 || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.Contains(errs, c.want) {
			t.Errorf("service %v: exit %d, %q; want one line with %q", c.args, code, errs, c.want)
		}
	}
	if got := r.status("s"); got.State != control.StateRunning || got.Pid != st.Pid || got.StandbyPid != 0 {
		t.Fatalf("after a refused clone: %+v; want running, pid %d", got, st.Pid)
	}
	if err := pingPlain("unix:" + sock); err != nil {
		t.Fatalf("after a refused clone: %v", err)
	}
	r.mustService("down", "s")
	if alive(st.Pid) {
		t.Errorf("pid %d alive after down", st.Pid)
	}
	r.waitFor("its stop line in its log", func() bool {
		b, _ := os.ReadFile(filepath.Join(r.logDir, "s.log"))
		return strings.Contains(string(b), " out stopping on terminated\n")
	})
}

// TestSimpleUpdate: `service update` of a simple service on rs's
// listener starts the new instance beside the old one, which stops once
// the new one is ready: under a client's load no request fails and no
// connection is refused. The program (the go-systemd fixture without
// its notify) knows nothing of rs.
func TestSimpleUpdate(t *testing.T) {
	r := startRS(t, `
[service.s]
type   = "simple"
binary = "$BIN/sdnotify"
args   = ["-serve", "-never-ready"]
listen = ["unix:$DIR/s.sock"]
`)
	sock := filepath.Join(r.dir, "s.sock")
	r.waitState("s", control.StateRunning, 0)
	up := stepsUnderLoad(r, "s", sock, "update", func(prev control.Status) {
		out := r.mustService("update", "s")
		if !strings.Contains(out, "no state transfer") {
			t.Errorf("update: %q", out)
		}
		r.waitState("s", control.StateRunning, prev.Pid)
	})
	if up.failed != 0 {
		t.Errorf("update: %d requests failed (last: %v), want 0", up.failed, up.lastErr)
	}
}

// TestSimpleChecksRunAsTheService: an exec check runs as the service
// does: its user, working directory and environment (the ready check
// here succeeds only as nobody, in the workdir, with the env key).
func TestSimpleChecksRunAsTheService(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip(needsRoot)
	}
	r := startRS(t, "")
	for d := r.dir; d != filepath.Dir(d) && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o711)
	}
	work := filepath.Join(r.dir, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	check := `exec:/bin/sh -c '[ "$(id -u)" = 65534 ] && [ "$(pwd -P)" = "$0" ] && [ "$CHECK_KEY" = yes ]' ` + work
	out, errs, code := r.service("up", "--type", "simple", "--binary", bin("plain"), "--args", "-sleep",
		"--user", "nobody", "--workdir", work, "--env", "CHECK_KEY=yes", "--ready", check, "--init-timeout", "5s", "s")
	if code != 0 {
		t.Fatalf("up: %q %q (the ready check did not run as the service)", out, errs)
	}
	// The same check with another expectation fails: it is not vacuous.
	out, errs, code = r.service("up", "--type", "simple", "--binary", bin("plain"), "--args", "-sleep",
		"--ready", check, "--init-timeout", "500ms", "t")
	if code == 0 || !strings.Contains(errs, "ready check") {
		t.Errorf("up of a service run as root with a check wanting nobody: exit %d, %q %q", code, out, errs)
	}
}
