package tests

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/rs/control"
)

// rs under a supervisor: systemd's notify protocol on a fake
// NOTIFY_SOCKET, rs as PID 1 of a PID namespace and as a subreaper, and
// rs's exit status.

// opsRS is an rs started by these tests, perhaps under a wrapper
// (unshare): pid is rs's own pid (in this test's namespace).
type opsRS struct {
	*rsProc
	pid int
	// ns: rs is in a PID namespace of its own, and its control socket
	// refuses a client it cannot see there: `service` runs in it
	// (nsenter).
	ns bool
}

// status is rsProc.status, from inside rs's PID namespace if need be.
func (o *opsRS) status(label string) control.Status {
	o.t.Helper()
	st, err := o.tryStatus(label)
	if err != nil {
		o.t.Fatalf("status %s: %v", label, err)
	}
	return st
}

func (o *opsRS) tryStatus(label string) (control.Status, error) {
	if !o.ns {
		rep, err := o.client().Do(control.Request{Op: control.OpStatus, Label: label}, nil)
		if err != nil || label == "" {
			return control.Status{}, err
		}
		return rep.Services[0], nil
	}
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(o.pid), "-p", "--", bin("service"), "--socket", o.sock, "status", "--json", label).Output()
	if err != nil {
		return control.Status{}, fmt.Errorf("nsenter service status: %w", err)
	}
	var v struct{ Services []control.Status }
	if err := json.Unmarshal(out, &v); err != nil || label == "" {
		return control.Status{}, err
	}
	if len(v.Services) != 1 {
		return control.Status{}, fmt.Errorf("status --json %s: %v: %s", label, err, out)
	}
	return v.Services[0], nil
}

func (o *opsRS) waitState(label, state string) control.Status {
	o.t.Helper()
	return o.waitFor2(label, func(st control.Status) bool {
		return st.State == state && (state != control.StateRunning || st.Pid != 0)
	})
}

func (o *opsRS) waitFor2(label string, cond func(control.Status) bool) control.Status {
	o.t.Helper()
	var st control.Status
	o.waitFor(label+" to change", func() bool {
		st = o.status(label)
		return cond(st)
	})
	return st
}

// startOpsRS starts rs as startRS does, with env added to its
// environment and wrapper (may be empty) before it on the command line.
func startOpsRS(t *testing.T, wrapper, env []string, config string) *opsRS {
	t.Helper()
	dir := t.TempDir()
	r := &rsProc{t: t, dir: dir, sock: filepath.Join(dir, "rs.sock"), logDir: filepath.Join(dir, "log"),
		log: &syncBuffer{}, done: make(chan struct{})}
	args := append(append([]string{}, wrapper...), bin("rs"), "--socket", r.sock, "--log-level", "debug", "--log-dir", r.logDir)
	if config != "" {
		cfg := filepath.Join(dir, "system.toml")
		config = strings.ReplaceAll(strings.ReplaceAll(config, "$BIN", binDir), "$DIR", dir)
		if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", cfg)
	}
	r.cmd = exec.Command(args[0], args[1:]...)
	r.cmd.Env = append(os.Environ(), env...)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.cmd.Wait(); close(r.done) }()
	o := &opsRS{rsProc: r, pid: r.cmd.Process.Pid, ns: len(wrapper) > 0}
	t.Cleanup(func() {
		syscall.Kill(o.pid, syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(waitTimeout):
			r.cmd.Process.Kill()
			syscall.Kill(o.pid, syscall.SIGKILL)
			<-r.done
			t.Errorf("rs did not exit on SIGTERM")
		}
		if t.Failed() {
			t.Logf("rs log:\n%s", r.log.String())
		}
	})
	if len(wrapper) > 0 {
		// rs is the wrapper's child.
		r.waitFor("rs under "+wrapper[len(wrapper)-1], func() bool {
			all, _ := children(r.cmd.Process.Pid)
			if len(all) == 1 {
				o.pid = all[0]
			}
			return len(all) == 1
		})
	}
	r.waitFor("control socket", func() bool {
		_, err := o.tryStatus("")
		return err == nil
	})
	return o
}

// stop sends rs SIGTERM and returns its exit code (its wrapper's, which
// passes it on).
func (o *opsRS) stop() int {
	o.t.Helper()
	syscall.Kill(o.pid, syscall.SIGTERM)
	select {
	case <-o.done:
	case <-time.After(waitTimeout):
		o.t.Fatalf("rs did not exit on SIGTERM")
	}
	return o.cmd.ProcessState.ExitCode()
}

// openFifo opens the fifo path for writing once its reader is there,
// which lets that reader go on.
func openFifo(t *testing.T, r *rsProc, path string) {
	t.Helper()
	r.waitFor("a reader of "+filepath.Base(path), func() bool {
		fd, err := unix.Open(path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
			return true
		}
		if !errors.Is(err, unix.ENXIO) {
			t.Fatalf("open %s: %v", path, err)
		}
		return false
	})
}

func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
}

// notifyListener is a fake systemd: the datagrams on its socket, one
// message each.
type notifyListener struct {
	addr string
	msgs chan string
}

func listenNotify(t *testing.T, addr string) *notifyListener {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifyListener{addr: addr, msgs: make(chan string, 1024)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				close(n.msgs)
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return n
}

// next returns the next message with a line starting with prefix,
// handing every message before it to seen; it fails after waitTimeout.
func (n *notifyListener) next(t *testing.T, prefix string, seen func(string)) string {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case m, ok := <-n.msgs:
			if !ok {
				t.Fatalf("notify socket closed before %s", prefix)
			}
			for _, line := range strings.Split(m, "\n") {
				if strings.HasPrefix(line, prefix) {
					return m
				}
			}
			if seen != nil {
				seen(m)
			}
		case <-deadline:
			t.Fatalf("no %s on the notify socket within %v", prefix, waitTimeout)
		}
	}
}

// rs tells a fake systemd READY=1 once every configured service has
// settled, and not before: a service whose init is held back keeps it
// back, while a failed one and one waiting for the failed one do not;
// WATCHDOG=1 keeps coming at WATCHDOG_USEC/2, before and after;
// STOPPING=1 at SIGTERM. The services do not see NOTIFY_SOCKET or
// WATCHDOG_*. Both a path and an abstract (@) socket.
func TestSystemdNotify(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run(fmt.Sprintf("abstract=%v", abstract), func(t *testing.T) {
			sockDir := t.TempDir()
			addr := filepath.Join(sockDir, "notify")
			if abstract {
				addr = fmt.Sprintf("@rs-test-notify-%d-%d", os.Getpid(), time.Now().UnixNano())
			}
			n := listenNotify(t, addr)
			gate := filepath.Join(sockDir, "gate")
			mkfifo(t, gate)
			r := startOpsRS(t, nil, []string{"NOTIFY_SOCKET=" + addr, "WATCHDOG_USEC=100000"}, `
[service.gate]
binary = "$BIN/roles"
args = ["-role", "gate-init", "`+gate+`"]
init_timeout = "30s"

[service.env]
binary = "$BIN/roles"
args = ["-role", "env-dump", "$DIR/env"]

[service.broken]
binary = "$BIN/roles"
args = ["-role", "exit-now"]

[service.after-broken]
binary = "$BIN/roles"
args = ["-role", "plain"]
depends = ["broken"]
`)
			r.waitState("env", control.StateRunning)
			r.waitState("broken", control.StateFailed)
			if st := r.status("gate"); st.State != control.StateStarting {
				t.Fatalf("gate is %s before its init may end", st.State)
			}
			// The loop answers, so WATCHDOG=1 comes; READY=1 must not
			// while gate is starting.
			early := func(m string) {
				if strings.Contains(m, "READY=1") {
					t.Errorf("READY=1 while gate is still starting: %q", m)
				}
			}
			for range 3 {
				n.next(t, "WATCHDOG=1", early)
			}
			if st := r.status("gate"); st.State != control.StateStarting {
				t.Fatalf("gate is %s before its init may end", st.State)
			}
			openFifo(t, r.rsProc, gate)
			ready := n.next(t, "READY=1", nil)
			if st := r.status("gate"); st.State != control.StateRunning {
				t.Errorf("READY=1 with gate %s", st.State)
			}
			if st := r.status("after-broken"); st.Pid != 0 {
				t.Errorf("after-broken runs (pid %d) though broken is failed", st.Pid)
			}
			if !strings.Contains(ready, "STATUS=2 running, 1 failed, 1 other of 4 configured") {
				t.Errorf("READY=1 message %q: want its STATUS= to count the services", ready)
			}
			for range 3 {
				n.next(t, "WATCHDOG=1", func(m string) { t.Errorf("after READY=1, %q before WATCHDOG=1", m) })
			}
			env, err := os.ReadFile(filepath.Join(r.dir, "env"))
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range []string{"NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID="} {
				if strings.Contains("\n"+string(env), "\n"+v) {
					t.Errorf("a service got rs's %s", v)
				}
			}
			syscall.Kill(r.pid, syscall.SIGTERM)
			n.next(t, "STOPPING=1", func(m string) {
				if !strings.HasPrefix(m, "WATCHDOG=1") {
					t.Errorf("before STOPPING=1: %q", m)
				}
			})
			// broken was failed: not every service stopped cleanly.
			if code := r.stop(); code != 2 {
				t.Errorf("rs exited %d with a failed service, want 2", code)
			}
			if !strings.Contains(r.log.String(), "not stopped cleanly") || !strings.Contains(r.log.String(), "label=broken") {
				t.Errorf("rs's log does not name the service that did not stop cleanly")
			}
		})
	}
}

// WATCHDOG_PID names another process: the watchdog is not rs's, and rs
// sends no WATCHDOG=1 (but READY=1 all the same).
func TestSystemdWatchdogOtherPid(t *testing.T) {
	addr := filepath.Join(t.TempDir(), "notify")
	n := listenNotify(t, addr)
	r := startOpsRS(t, nil, []string{"NOTIFY_SOCKET=" + addr, "WATCHDOG_USEC=20000", "WATCHDOG_PID=1"}, `
[service.a]
binary = "$BIN/roles"
args = ["-role", "plain"]
`)
	r.waitState("a", control.StateRunning)
	n.next(t, "READY=1", func(m string) { t.Errorf("before READY=1: %q", m) })
	// A beat every 10ms would have been due many times by now.
	r.waitFor("rs's uptime", func() bool {
		rep, err := r.client().Do(control.Request{Op: control.OpStatus}, nil)
		return err == nil && rep.Daemon.UptimeS > 0.2
	})
	syscall.Kill(r.pid, syscall.SIGTERM)
	n.next(t, "STOPPING=1", func(m string) { t.Errorf("WATCHDOG_PID=1, yet rs said %q", m) })
	if code := r.stop(); code != 0 {
		t.Errorf("rs exited %d, want 0", code)
	}
}

// rs as PID 1 of a new PID namespace, and as a plain subreaper: a
// service's child starts a grandchild and exits, so the grandchild is an
// orphan and is reparented to rs; when it exits rs reaps it (no zombie
// is left). A service's own exit status still reaches rs (the reaper
// did not take it). SIGTERM stops everything and rs exits 0.
func TestOrphansReaped(t *testing.T) {
	for _, c := range []struct {
		name    string
		wrapper []string
	}{
		{"pid1", []string{"unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL"}},
		{"subreaper", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			if len(c.wrapper) > 0 {
				if out, err := exec.Command(c.wrapper[0], append(c.wrapper[1:], "true")...).CombinedOutput(); err != nil {
					t.Skipf("cannot make a PID namespace here: %v: %s", err, out)
				}
			}
			wrapper := c.wrapper
			if len(wrapper) > 0 {
				wrapper = append(ownCgroups(t), wrapper...)
			}
			fifo := filepath.Join(t.TempDir(), "leaf")
			mkfifo(t, fifo)
			r := startOpsRS(t, wrapper, nil, `
[service.orph]
binary = "$BIN/roles"
type = "simple"
args = ["-role", "orphaner", "`+fifo+`"]

[service.crash]
binary = "$BIN/roles"
args = ["-role", "exit-after-init"]
restart = "never"
`)
			if len(c.wrapper) > 0 {
				if ns := nsPid(t, r.pid); ns != 1 {
					t.Fatalf("rs is pid %d in its namespace, want 1", ns)
				}
			}
			r.waitState("orph", control.StateRunning)
			var leaf int
			r.waitFor("the orphan", func() bool {
				leaf = findProc("orphan-leaf", fifo)
				return leaf != 0
			})
			r.waitFor("the orphan reparented to rs", func() bool { return ppid(leaf) == r.pid })
			openFifo(t, r.rsProc, fifo) // the orphan exits
			r.waitFor(fmt.Sprintf("orphan %d reaped", leaf), func() bool {
				_, err := os.Stat(fmt.Sprintf("/proc/%d", leaf))
				return err != nil
			})
			if _, z := children(r.pid); len(z) > 0 {
				t.Errorf("zombie children of rs: %v", z)
			}
			st := r.waitFor2("crash", func(st control.Status) bool { return st.LastExit != "" })
			if st.LastExit != "terminated: exit 4" {
				t.Errorf("crash's last_exit %q, want %q: its status did not reach rs", st.LastExit, "terminated: exit 4")
			}
			if code := r.stop(); code != 0 {
				t.Errorf("rs exited %d after SIGTERM, want 0", code)
			}
			if pid := findProc("orphaner", fifo); pid != 0 {
				t.Errorf("service orph (pid %d) outlived rs", pid)
			}
		})
	}
}

// A service that does not stop within its stop_grace (SIGKILL): rs exits
// 2 and names it.
func TestExitStatusUnclean(t *testing.T) {
	r := startOpsRS(t, nil, nil, `
[service.stub]
binary = "$BIN/roles"
args = ["-role", "stubborn"]
stop_grace = "50ms"

[service.fine]
binary = "$BIN/roles"
args = ["-role", "plain"]
`)
	r.waitState("stub", control.StateRunning)
	r.waitState("fine", control.StateRunning)
	if code := r.stop(); code != 2 {
		t.Errorf("rs exited %d, want 2", code)
	}
	log := r.log.String()
	if !strings.Contains(log, "label=stub") || !strings.Contains(log, "SIGKILL") || strings.Contains(log, `not stopped cleanly" label=fine`) {
		t.Errorf("rs's log should name stub (SIGKILL) alone as not stopped cleanly:\n%s", log)
	}
}

// nsPid is pid's number in its own (innermost) PID namespace.
func nsPid(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f, ok := strings.CutPrefix(line, "NSpid:"); ok {
			ids := strings.Fields(f)
			n, _ := strconv.Atoi(ids[len(ids)-1])
			return n
		}
	}
	t.Fatalf("no NSpid in /proc/%d/status", pid)
	return 0
}

// findProc returns a process whose command line holds every word, or 0.
func findProc(words ...string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		all := true
		for _, w := range words {
			found := false
			for _, a := range args {
				found = found || a == w
			}
			all = all && found
		}
		if all {
			return pid
		}
	}
	return 0
}

// ppid is pid's parent, or 0.
func ppid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// ownCgroups returns a wrapper command line (sh) that moves itself into
// new cgroups of its own, below the test's, in the hierarchies rs uses
// (v2, v1 memory and pids), as a container has. (An rs sharing its
// cgroup with others works too: TestPid1BesideAnotherRS.)
func ownCgroups(t *testing.T) []string {
	t.Helper()
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	cg, _ := os.ReadFile("/proc/self/cgroup")
	mount := func(fstype, opt string) string {
		for _, line := range strings.Split(string(mi), "\n") {
			pre, post, ok := strings.Cut(line, " - ")
			f, g := strings.Fields(pre), strings.Fields(post)
			if !ok || len(f) < 5 || len(g) < 3 || g[0] != fstype || f[3] != "/" {
				continue
			}
			if opt == "" || slices.Contains(strings.Split(g[2], ","), opt) {
				return f[4]
			}
		}
		return ""
	}
	own := func(ctrl string) string {
		for _, line := range strings.Split(string(cg), "\n") {
			p := strings.SplitN(line, ":", 3)
			if len(p) == 3 && (ctrl == "" && p[0] == "0" || ctrl != "" && slices.Contains(strings.Split(p[1], ","), ctrl)) {
				return p[2]
			}
		}
		return ""
	}
	name := fmt.Sprintf("pid1-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	script := ""
	for _, h := range []struct{ fstype, ctrl string }{{"cgroup2", ""}, {"cgroup", "memory"}, {"cgroup", "pids"}} {
		m := mount(h.fstype, h.ctrl)
		if m == "" {
			continue
		}
		dir := filepath.Join(m, own(h.ctrl), name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Logf("no cgroup of its own for rs in %s: %v", m, err)
			continue
		}
		t.Cleanup(func() {
			// After rs: its own subtree is gone by then.
			deadline := time.Now().Add(waitTimeout)
			for os.Remove(dir) != nil && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
		})
		script += fmt.Sprintf("echo $$ > %q/cgroup.procs && ", dir)
	}
	return []string{"sh", "-c", script + `exec "$@"`, "sh"}
}

// TestPid1BesideAnotherRS: an rs that is PID 1 of a new PID namespace,
// in the same cgroup as an rs outside it (no cgroups of its own, unlike
// TestOrphansReaped), cannot see the other's pid; it must not take the
// other's subtree for an orphan's and kill its services, nor must an rs
// started outside afterwards kill the PID 1 one's.
func TestPid1BesideAnotherRS(t *testing.T) {
	pid1 := []string{"unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL"}
	if out, err := exec.Command(pid1[0], append(pid1[1:], "true")...).CombinedOutput(); err != nil {
		t.Skipf("cannot make a PID namespace here: %v: %s", err, out)
	}
	cfg := func(label string) string {
		return "[service." + label + "]\nbinary = \"$BIN/roles\"\nargs = [\"-role\", \"plain\"]\n"
	}
	host := startOpsRS(t, nil, nil, cfg("a"))
	rep, err := host.client().Do(control.Request{Op: control.OpStatus}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if mode := rep.Daemon.Containment; mode != "cgroup" {
		t.Skipf("containment is %q here: the subtrees are cgroup v2's", mode)
	}
	a := host.waitState("a", control.StateRunning)
	inner := startOpsRS(t, pid1, nil, cfg("b"))
	b := inner.waitState("b", control.StateRunning)
	later := startOpsRS(t, nil, nil, cfg("c"))
	later.waitState("c", control.StateRunning)
	for _, c := range []struct {
		r     *opsRS
		label string
		pid   int
	}{{host, "a", a.Pid}, {inner, "b", b.Pid}} {
		if st := c.r.status(c.label); st.State != control.StateRunning || st.Pid != c.pid || st.Restarts != 0 {
			t.Errorf("%s after the other rs started: %s pid %d (was %d), %d restarts, last exit %q",
				c.label, st.State, st.Pid, c.pid, st.Restarts, st.LastExit)
		}
	}
	for _, r := range []*opsRS{later, inner, host} {
		if code := r.stop(); code != 0 {
			t.Errorf("rs exited %d, want 0", code)
		}
	}
}
