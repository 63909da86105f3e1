package tests

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// kvConfig is one kv with fast pings and no backoff to speak of, so that
// tests see every fault recovered quickly.
func kvConfig(addr string, extra string) string {
	return fmt.Sprintf(`
[service.kv]
binary = "$BIN/kv"
args = ["--listen", %q, "--allow-faults"]
period = "100ms"
backoff_base = "1ms"
backoff_cap = "1ms"
max_restarts = -1
stop_grace = "500ms"
%s
`, addr, extra)
}

func TestFaultsAreReincarnated(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, kvConfig(addr, ""))
	st := r.waitState("kv", control.StateRunning, 0)
	cases := []struct {
		kind, lastExit string
	}{
		{"panic", "terminated: exit 2"},
		{"exit", "terminated: exit 3"},
		{"kill", "terminated: SIGKILL"},
		{"abort", "terminated: SIGABRT"},
		{"hang", "no-heartbeat"},
		{"spin", "no-heartbeat"},
		{"stop", "no-heartbeat"},
		{"garbage", "faulty: malformed message"},
		{"closechan", "faulty: closed its channel"},
	}
	restarts := st.Restarts
	for _, c := range cases {
		t.Run(c.kind, func(t *testing.T) {
			if v := kvDo(t, addr, "DEBUG", "FAULT", c.kind); v.Str != "OK" {
				t.Fatalf("DEBUG FAULT %s: %v", c.kind, v)
			}
			next := r.waitState("kv", control.StateRunning, st.Pid)
			if !strings.HasPrefix(next.LastExit, c.lastExit) {
				t.Errorf("last_exit %q, want prefix %q", next.LastExit, c.lastExit)
			}
			if next.Restarts != restarts+1 {
				t.Errorf("restarts %d, want %d", next.Restarts, restarts+1)
			}
			if pid := kvPid(t, addr); pid != next.Pid {
				t.Errorf("kv answers from pid %d, status says %d", pid, next.Pid)
			}
			if v := kvDo(t, addr, "SET", "k", c.kind); v.Str != "OK" {
				t.Errorf("SET after %s: %v", c.kind, v)
			}
			st, restarts = next, next.Restarts
		})
	}
}

func TestDownUpRestart(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, kvConfig(addr, ""))
	first := r.waitState("kv", control.StateRunning, 0)

	r.mustService("down", "kv")
	st := r.status("kv")
	if st.State != control.StateDown || st.Pid != 0 {
		t.Fatalf("after down: %+v", st)
	}
	if alive(first.Pid) {
		t.Fatalf("pid %d still alive after down", first.Pid)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("kv still accepts connections after down")
	}
	// Down stays down: the exit of the stopped instance was handled (and
	// any restart decided) before down replied, so this status is final.
	if st := r.status("kv"); st.State != control.StateDown {
		t.Fatalf("down did not stay down: %+v", st)
	}

	out := r.mustService("up", "kv")
	if !strings.Contains(out, "running") {
		t.Errorf("up printed %q", out)
	}
	up := r.waitState("kv", control.StateRunning, 0)
	if kvPid(t, addr) != up.Pid {
		t.Fatalf("kv not serving after up")
	}
	kvDo(t, addr, "SET", "a", "1")

	r.mustService("restart", "kv")
	again := r.status("kv")
	if again.State != control.StateRunning || again.Pid == up.Pid || again.Pid == 0 {
		t.Fatalf("restart: %+v, old pid %d", again, up.Pid)
	}
	if alive(up.Pid) {
		t.Fatalf("old pid %d alive after restart", up.Pid)
	}
	if kvPid(t, addr) != again.Pid {
		t.Fatalf("kv not serving after restart")
	}
}

func TestCommandErrors(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, kvConfig(addr, ""))
	r.waitState("kv", control.StateRunning, 0)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown label", []string{"down", "nosuch"}, `unknown service "nosuch"`},
		{"unknown label restart", []string{"restart", "nosuch"}, `unknown service "nosuch"`},
		{"unknown label status", []string{"status", "nosuch"}, `unknown service "nosuch"`},
		{"up without binary", []string{"up", "nosuch"}, "give --binary"},
		{"missing binary", []string{"up", "--binary", "/nonexistent/kv", "x"}, "/nonexistent/kv: no such file or directory"},
		{"not executable", []string{"up", "--binary", "/etc/passwd", "x"}, "not an executable"},
		{"exits at once", []string{"up", "--binary", bin("roles"), "--args", "-role exit-now", "quick"}, "terminated: exit 1"},
		{"init fails", []string{"up", "--binary", bin("roles"), "--args", "-role fail-init", "badinit"}, "no database configured"},
		{"already up", []string{"up", "kv"}, "already up"},
		{"bad restart policy", []string{"up", "--binary", bin("kv"), "--restart", "sometimes", "y"}, "restart"},
		{"missing label", []string{"down"}, "missing <label>"},
		{"flags after label", []string{"up", "z", "--binary", bin("kv")}, "flags go before the label"},
		{"unknown dependency", []string{"up", "--binary", bin("kv"), "--depends", "db", "web"}, `dependency "db"`},
		{"update unknown", []string{"update", "nosuch"}, `unknown service "nosuch"`},
		{"update missing binary", []string{"update", "--binary", "/nonexistent/kv2", "kv"}, "/nonexistent/kv2: no such file or directory (nothing changed)"},
		{"update down service", []string{"update", "quick"}, "only a running service can be updated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, errs, code := r.service(c.args...)
			if code == 0 {
				t.Fatalf("exit 0, stdout %q", out)
			}
			lines := strings.Split(strings.TrimSpace(errs), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "service: ") || !strings.Contains(lines[0], c.want) {
				t.Fatalf("stderr %q, want one line containing %q", errs, c.want)
			}
		})
	}
	if st := r.status("quick"); st.State != control.StateFailed || st.Pid != 0 {
		t.Errorf("a binary that exits at once: %+v, want failed", st)
	}
	// rs unreachable: one line, non-zero.
	_, errs, code := runService(t, filepath.Join(t.TempDir(), "none.sock"), nil, "status")
	if code == 0 || !strings.Contains(errs, "rs is not running") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Errorf("unreachable rs: exit %d, stderr %q", code, errs)
	}
}

func TestInitDeadline(t *testing.T) {
	r := startRS(t, "")
	_, errs, code := r.service("up", "--binary", bin("roles"), "--args", "-role hang-init", "slow")
	// The default init deadline is 5s; the command must fail with it.
	if code == 0 || !strings.Contains(errs, "init-timeout") {
		t.Fatalf("up of a service that never finishes init: exit %d, %q", code, errs)
	}
	if st := r.status("slow"); st.State != control.StateFailed || st.Pid != 0 {
		t.Fatalf("after init timeout: %+v", st)
	}
}

func TestStatusJSON(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, kvConfig(addr, ""))
	st := r.waitState("kv", control.StateRunning, 0)
	r.waitFor("a ping round trip", func() bool { return r.status("kv").PingRTTUs > 0 })
	svcs := r.statusJSON()
	if len(svcs) != 1 {
		t.Fatalf("services: %v", svcs)
	}
	s := svcs[0]
	want := map[string]any{
		"label": "kv", "state": "running", "pid": float64(st.Pid),
		"restarts": float64(0), "binary": bin("kv"), "last_exit": "",
	}
	for k, v := range want {
		if s[k] != v {
			t.Errorf("%s = %#v, want %#v", k, s[k], v)
		}
	}
	if rtt, ok := s["ping_rtt_us"].(float64); !ok || rtt <= 0 {
		t.Errorf("ping_rtt_us = %#v", s["ping_rtt_us"])
	}
	table := r.mustService("status")
	if !strings.Contains(table, "LABEL") || !strings.Contains(table, "kv") || !strings.Contains(table, strconv.Itoa(st.Pid)) {
		t.Errorf("status table:\n%s", table)
	}
}

func TestForeignUIDRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run service as another uid")
	}
	r := startRS(t, "")
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	// The socket is 0600: nobody cannot even connect.
	_, errs, code := runService(t, r.sock, nobody, "status")
	if code == 0 || !strings.Contains(errs, "permission denied") {
		t.Fatalf("nobody through a 0600 socket: exit %d, %q", code, errs)
	}
	// With the file mode opened up, SO_PEERCRED still refuses.
	os.Chmod(filepath.Dir(r.dir), 0o755)
	os.Chmod(r.dir, 0o755)
	os.Chmod(r.sock, 0o666)
	_, errs, code = runService(t, r.sock, nobody, "shutdown")
	if code == 0 || !strings.Contains(errs, "uid 65534 may not control this rs") {
		t.Fatalf("nobody through an open socket: exit %d, %q", code, errs)
	}
	if _, err := r.client().Do(control.Request{Op: control.OpStatus}, nil); err != nil {
		t.Fatalf("rs no longer answers its own uid: %v", err)
	}
}

func TestSIGTERMStopsEverything(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, kvConfig(addr, "")+`
[service.plain]
binary = "$BIN/roles"
args = ["-role", "plain"]
depends = ["kv"]

[service.stubborn]
binary = "$BIN/roles"
args = ["-role", "stubborn"]
stop_grace = "100ms"
`)
	pids := []int{}
	for _, l := range []string{"kv", "plain", "stubborn"} {
		pids = append(pids, r.waitState(l, control.StateRunning, 0).Pid)
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(waitTimeout):
		t.Fatal("rs did not exit after SIGTERM")
	}
	// stubborn needed SIGKILL: not every service stopped cleanly.
	if code := r.cmd.ProcessState.ExitCode(); code != 2 {
		t.Errorf("rs exit code %d, want 2", code)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("pid %d survived rs", pid)
		}
	}
	log := r.log.String()
	// Dependents stop before what they depend on.
	if i, j := strings.Index(log, `msg=stopping label=plain`), strings.Index(log, `msg=stopping label=kv`); i < 0 || j < 0 || i > j {
		t.Errorf("plain (depends on kv) must be stopped before kv:\n%s", log)
	}
	if _, err := os.Stat(r.sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind: %v", err)
	}
}

func TestGroupKilledWithService(t *testing.T) {
	r := startRS(t, "")
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	r.mustService("up", "--binary", bin("roles"), "--args", "-role forker "+pidFile, "--restart", "never", "forker")
	st := r.status("forker")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	child, _ := strconv.Atoi(string(b))
	syscall.Kill(st.Pid, syscall.SIGKILL)
	r.waitState("forker", control.StateDown, 0)
	r.waitFor("the forked child to die with its service", func() bool { return !alive(child) })
}

func TestStopEscalatesToKill(t *testing.T) {
	r := startRS(t, `
[service.stubborn]
binary = "$BIN/roles"
args = ["-role", "stubborn"]
stop_grace = "100ms"
`)
	st := r.waitState("stubborn", control.StateRunning, 0)
	r.mustService("down", "stubborn")
	if alive(st.Pid) {
		t.Fatalf("stubborn service alive after down")
	}
	// rs's log lines go out through a queue: the line may follow the reply.
	r.waitFor("the stop to end in SIGKILL", func() bool { return strings.Contains(r.log.String(), `label=stubborn exit=SIGKILL`) })
}

// TestCrashRestartsRefuseNothing: kill -9 kv again and again while
// clients connect in a loop; the listener stays in rs's fd store, so no
// connection is refused, and rs's fds and children do not pile up.
func TestCrashRestartsRefuseNothing(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, kvConfig(addr, ""))
	st := r.waitState("kv", control.StateRunning, 0)
	rsPid := r.cmd.Process.Pid

	var refused, served atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", addr, waitTimeout)
				if err != nil {
					if errors.Is(err, syscall.ECONNREFUSED) {
						refused.Add(1)
					}
					continue
				}
				c.Close()
				served.Add(1)
			}
		}()
	}
	const kills = 100
	var fdsAfterWarmup int
	for i := 0; i < kills; i++ {
		if i == 5 {
			fdsAfterWarmup = fdCount(t, rsPid)
		}
		syscall.Kill(st.Pid, syscall.SIGKILL)
		st = r.waitState("kv", control.StateRunning, st.Pid)
	}
	close(stop)
	wg.Wait()
	if n := refused.Load(); n != 0 {
		t.Errorf("%d connections refused over %d crash-restarts (%d made)", n, kills, served.Load())
	}
	fdsBackTo(t, rsPid, fdsAfterWarmup, fmt.Sprintf("over %d crash-restarts", kills))
	kids, zombies := children(rsPid)
	if len(zombies) > 0 || len(kids) != 1 {
		t.Errorf("rs children %v, zombies %v; want just kv", kids, zombies)
	}
	if kvPid(t, addr) != st.Pid {
		t.Errorf("kv not serving at the end")
	}
}

func TestBadConfig(t *testing.T) {
	dir := t.TempDir()
	cases := []struct{ name, cfg, want string }{
		{"cycle", `
[service.a]
binary = "/bin/true"
depends = ["b"]
[service.b]
binary = "/bin/true"
depends = ["a"]
`, "cycle"},
		{"unknown dependency", `
[service.a]
binary = "/bin/true"
depends = ["db"]
`, `"db"`},
		{"syntax", "[service.a\nbinary = 1\n", "table name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, "bad.toml")
			os.WriteFile(path, []byte(c.cfg), 0o644)
			out, err := exec.Command(bin("rs"), "--config", path, "--socket", filepath.Join(dir, "s.sock"), "--log-dir", filepath.Join(dir, "log")).CombinedOutput()
			if err == nil {
				t.Fatalf("rs accepted a bad config: %s", out)
			}
			msg := strings.TrimSpace(string(out))
			if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, path) || !strings.Contains(msg, c.want) {
				t.Fatalf("rs said %q; want one line naming %s and %q", msg, path, c.want)
			}
		})
	}
}

// TestUpRefusesCycleAndNonsense: `service up` goes through the same
// checks as the config file. With b depending on a, a down and b still
// running, `up --depends b a` would close a cycle a -> b -> a (after
// which rs could not order a shutdown); rs refuses it, and a ping period
// of a nanosecond, and stays as it was.
func TestUpRefusesCycleAndNonsense(t *testing.T) {
	r := startRS(t, `
[service.a]
binary = "$BIN/roles"
args = ["-role", "plain"]
restart = "never"

[service.b]
binary = "$BIN/roles"
args = ["-role", "plain"]
depends = ["a"]
`)
	a := r.waitState("a", control.StateRunning, 0)
	b := r.waitState("b", control.StateRunning, 0)
	syscall.Kill(a.Pid, syscall.SIGKILL)
	r.waitState("a", control.StateDown, 0)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"up", "--depends", "b", "a"}, "dependency cycle: b -> a -> b"},
		{[]string{"up", "--period", "1ns", "a"}, `service "a": period 1ns: shorter than 10ms`},
		{[]string{"up", "--binary", bin("roles"), "--ping-timeout", "1ms", "c"}, `service "c": ping_timeout 1ms: shorter than 10ms`},
	}
	for _, c := range cases {
		_, errs, code := r.service(c.args...)
		if code == 0 || !strings.Contains(errs, c.want) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("service %v: exit %d, stderr %q; want one line with %q", c.args, code, errs, c.want)
		}
	}
	if st := r.status("a"); st.State != control.StateDown || len(st.Depends) != 0 {
		t.Errorf("a after the refusals: %+v", st)
	}
	if st := r.status("b"); st.State != control.StateRunning || st.Pid != b.Pid {
		t.Errorf("b after the refusals: %+v", st)
	}
	if _, _, code := r.service("status", "c"); code == 0 {
		t.Errorf("a refused up added c to the table")
	}
}

// TestStatusOfTenThousand: status of ten thousand services, each with
// 736 bytes of args, comes back whole through `service status --json`
// (a reply used to fail past the client's 128 KiB buffer: 200 such
// services were enough). They wait for a dependency that failed, so no
// process runs.
func TestStatusOfTenThousand(t *testing.T) {
	const n = 10000
	arg := strings.Repeat("a", 736)
	var cfg strings.Builder
	cfg.WriteString("[service.root]\nbinary = \"$BIN/roles\"\nargs = [\"-role\", \"exit-now\"]\n")
	for i := range n {
		fmt.Fprintf(&cfg, "[service.s%05d]\nbinary = \"$BIN/roles\"\nargs = [%q]\ndepends = [\"root\"]\n", i, arg)
	}
	r := startRS(t, cfg.String())
	r.waitState("root", control.StateFailed, 0)
	svcs := r.statusJSON()
	if len(svcs) != n+1 {
		t.Fatalf("status --json: %d services, want %d", len(svcs), n+1)
	}
	last := svcs[n]
	if args, _ := last["args"].([]any); last["label"] != fmt.Sprintf("s%05d", n-1) || len(args) != 1 || args[0] != arg || last["state"] != "starting" {
		t.Fatalf("last row: label %v, state %v", last["label"], last["state"])
	}
	if out := r.mustService("status"); strings.Count(out, "\n") != n+2 {
		t.Fatalf("status table: %d lines, want %d", strings.Count(out, "\n"), n+2)
	}
}

// TestDownStopsDependents: `down a` first stops what depends on a,
// dependents first (c, then b, then a), as systemd does; all of them stay
// down, an unrelated service is untouched, and `up a` brings back only a.
func TestDownStopsDependents(t *testing.T) {
	role := "binary = \"$BIN/roles\"\nargs = [\"-role\", \"plain\"]\n"
	r := startRS(t, "[service.a]\n"+role+"[service.b]\n"+role+"depends = [\"a\"]\n"+
		"[service.c]\n"+role+"depends = [\"b\"]\n[service.d]\n"+role)
	pids := map[string]int{}
	for _, l := range []string{"a", "b", "c", "d"} {
		pids[l] = r.waitState(l, control.StateRunning, 0).Pid
	}
	out := r.mustService("down", "a")
	if !strings.Contains(out, "a down (and what depends on it: c, b)") {
		t.Errorf("down a printed %q", out)
	}
	for _, l := range []string{"a", "b", "c"} {
		if st := r.status(l); st.State != control.StateDown || alive(pids[l]) {
			t.Errorf("%s after down a: %+v", l, st)
		}
	}
	if st := r.status("d"); st.State != control.StateRunning || st.Pid != pids["d"] {
		t.Errorf("d after down a: %+v", st)
	}
	log := r.log.String()
	c, b, a := strings.Index(log, "msg=stopping label=c"), strings.Index(log, "msg=stopping label=b"), strings.Index(log, "msg=stopping label=a")
	if c < 0 || b < c || a < b {
		t.Errorf("stops not dependents first (c %d, b %d, a %d):\n%s", c, b, a, log)
	}
	r.mustService("up", "a")
	if st := r.status("b"); st.State != control.StateDown {
		t.Errorf("b after up a: %+v", st)
	}
	if _, errs, code := r.service("up", "c"); code == 0 || !strings.Contains(errs, "dependency b is not running (down)") {
		t.Errorf("up c with b down: exit %d, %q", code, errs)
	}
}
