package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reincarnation/rs/internal/resp"
	"github.com/reincarnation/rs/rs/control"
)

// binDir holds rs, service, kv and idle, built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	// The test binary doubles as the test services: `roles -role NAME`.
	if len(os.Args) > 2 && os.Args[1] == "-role" {
		os.Exit(runRole(os.Args[2], os.Args[3:]))
	}
	dir, err := os.MkdirTemp("", "rs-tests-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	os.Chmod(dir, 0o755) // the foreign-uid test runs `service` as nobody
	builds := [][]string{
		{"-o", dir + "/", "github.com/reincarnation/rs/cmd/rs", "github.com/reincarnation/rs/cmd/service", "github.com/reincarnation/rs/servers/kv", "github.com/reincarnation/rs/servers/idle", "github.com/reincarnation/rs/servers/httpcount"},
		// Two versions for live updates, and three that fail theirs.
		{"-o", dir + "/kv-a", "-ldflags", "-X main.version=a", "github.com/reincarnation/rs/servers/kv"},
		{"-o", dir + "/kv-b", "-ldflags", "-X main.version=b", "github.com/reincarnation/rs/servers/kv"},
		{"-o", dir + "/kv-luexit", "-ldflags", "-X main.luFault=exit", "github.com/reincarnation/rs/servers/kv"},
		{"-o", dir + "/kv-luhang", "-ldflags", "-X main.luFault=hang", "github.com/reincarnation/rs/servers/kv"},
		{"-o", dir + "/sdnotify", "github.com/reincarnation/rs/tests/fixtures/sdnotify"},
		{"-o", dir + "/kv-lurestore", "-ldflags", "-X main.luFault=restore", "github.com/reincarnation/rs/servers/kv"},
		// Pre-copy (precopy_test.go): a kv whose base load fails, and one
		// without pre-copy, as a kv built before it.
		{"-o", dir + "/kv-lubase", "-ldflags", "-X main.luFault=base", "github.com/reincarnation/rs/servers/kv"},
		{"-o", dir + "/kv-nopre", "-ldflags", "-X main.preCopy=off -X main.version=nopre", "github.com/reincarnation/rs/servers/kv"},
		// A daemon that knows nothing of rs, for type simple.
		{"-o", dir + "/plain", "github.com/reincarnation/rs/tests/fixtures/plain"},
		// rs with its fault hooks (a panic in the loop, a table refused).
		{"-o", dir + "/rs-fault", "-tags", "rsfault", "github.com/reincarnation/rs/cmd/rs"},
	}
	for _, args := range builds {
		build := exec.Command("go", append([]string{"build"}, args...)...)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build:", err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	self, _ := os.Executable()
	copyFile(self, filepath.Join(dir, "roles"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func copyFile(from, to string) {
	b, err := os.ReadFile(from)
	if err == nil {
		err = os.WriteFile(to, b, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "copy:", err)
		os.Exit(1)
	}
}

func bin(name string) string { return filepath.Join(binDir, name) }

// waitTimeout bounds every wait on an event in these tests.
const waitTimeout = 20 * time.Second

// rsProc is a running rs under test.
type rsProc struct {
	t      *testing.T
	dir    string
	sock   string
	logDir string // services' <label>.log
	cmd    *exec.Cmd
	log    *syncBuffer
	done   chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startRS starts rs with config (TOML, may be empty) in a fresh directory,
// with extra flags if any. "$BIN" in config is replaced by the directory
// of the built binaries and "$DIR" by the test's directory (in extra too).
func startRS(t *testing.T, config string, extra ...string) *rsProc {
	t.Helper()
	return startRSTo(t, config, nil, extra...)
}

// startRSTo is startRS with rs's stdout and stderr on out (nil: r.log).
func startRSTo(t *testing.T, config string, out *os.File, extra ...string) *rsProc {
	t.Helper()
	return startRSBin(t, bin("rs"), config, out, extra...)
}

// startRSBin is startRSTo of the rs binary rsBin.
func startRSBin(t *testing.T, rsBin, config string, out *os.File, extra ...string) *rsProc {
	t.Helper()
	dir := t.TempDir()
	r := &rsProc{t: t, dir: dir, sock: filepath.Join(dir, "rs.sock"), logDir: filepath.Join(dir, "log"),
		log: &syncBuffer{}, done: make(chan struct{})}
	args := []string{"--socket", r.sock, "--log-level", "debug", "--log-dir", r.logDir}
	for _, a := range extra {
		args = append(args, strings.ReplaceAll(a, "$DIR", dir))
	}
	if config != "" {
		cfg := filepath.Join(dir, "system.toml")
		config = strings.ReplaceAll(config, "$BIN", binDir)
		config = strings.ReplaceAll(config, "$DIR", dir)
		if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", cfg)
	}
	r.cmd = exec.Command(rsBin, args...)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if out != nil {
		r.cmd.Stdout, r.cmd.Stderr = out, out
	}
	// If the test binary dies (a -timeout panic, say) rs goes with it,
	// and its services with rs.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		// rs's loop counts events it had no case for: a bug, whatever
		// the test was about.
		select {
		case <-r.done:
		default:
			if rep, err := r.client().Do(control.Request{Op: control.OpStatus}, nil); err == nil && rep.Daemon.UnknownEvents != 0 {
				t.Errorf("rs met %d events its loop has no case for", rep.Daemon.UnknownEvents)
			}
		}
		r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(waitTimeout):
			r.cmd.Process.Kill()
			<-r.done
			t.Errorf("rs did not exit on SIGTERM")
		}
		if t.Failed() {
			t.Logf("rs log:\n%s", r.log.String())
			logs, _ := filepath.Glob(filepath.Join(r.logDir, "*.log"))
			for _, l := range logs {
				if b, err := os.ReadFile(l); err == nil {
					if len(b) > 4096 {
						b = b[len(b)-4096:]
					}
					t.Logf("%s (its end):\n%s", filepath.Base(l), b)
				}
			}
		}
	})
	r.waitFor("control socket", func() bool {
		_, err := r.client().Do(control.Request{Op: control.OpStatus}, nil)
		return err == nil
	})
	return r
}

func (r *rsProc) client() control.Client { return control.Client{Socket: r.sock, Timeout: waitTimeout} }

// waitFor polls cond until it holds, within waitTimeout.
func (r *rsProc) waitFor(what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		select {
		case <-r.done:
			r.t.Fatalf("rs exited while waiting for %s", what)
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *rsProc) status(label string) control.Status {
	r.t.Helper()
	rep, err := r.client().Do(control.Request{Op: control.OpStatus, Label: label}, nil)
	if err != nil {
		r.t.Fatalf("status %s: %v", label, err)
	}
	return rep.Services[0]
}

// waitFor2 waits until label's status satisfies cond and returns it.
func (r *rsProc) waitFor2(label string, cond func(control.Status) bool) control.Status {
	r.t.Helper()
	var st control.Status
	r.waitFor(label+" to change", func() bool {
		st = r.status(label)
		return cond(st)
	})
	return st
}

// waitState waits until label is in state with a pid other than notPid.
func (r *rsProc) waitState(label, state string, notPid int) control.Status {
	r.t.Helper()
	var st control.Status
	r.waitFor(fmt.Sprintf("%s %s (not pid %d)", label, state, notPid), func() bool {
		st = r.status(label)
		return st.State == state && (state != control.StateRunning || st.Pid != notPid && st.Pid != 0)
	})
	return st
}

// service runs bin/service against this rs and returns its stdout,
// stderr and exit code.
func (r *rsProc) service(args ...string) (string, string, int) {
	r.t.Helper()
	return runService(r.t, r.sock, nil, args...)
}

func runService(t *testing.T, sock string, cred *syscall.Credential, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin("service"), append([]string{"--socket", sock}, args...)...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("service %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// mustService runs bin/service and fails the test unless it succeeds.
func (r *rsProc) mustService(args ...string) string {
	r.t.Helper()
	out, errs, code := r.service(args...)
	if code != 0 {
		r.t.Fatalf("service %v: exit %d: %s", args, code, errs)
	}
	return out
}

func (r *rsProc) statusJSON() []map[string]any {
	r.t.Helper()
	out := r.mustService("status", "--json")
	var v struct {
		Services []map[string]any `json:"services"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		r.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return v.Services
}

// freeAddr returns a loopback TCP address nobody listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func dialKV(t *testing.T, addr string) *resp.Client {
	t.Helper()
	c, err := resp.Dial("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatalf("dial kv %s: %v", addr, err)
	}
	c.SetDeadline(time.Now().Add(waitTimeout))
	t.Cleanup(func() { c.Close() })
	return c
}

// kvDo runs one command on a new connection.
func kvDo(t *testing.T, addr string, args ...string) resp.Value {
	t.Helper()
	c := dialKV(t, addr)
	v, err := c.Do(args...)
	if err != nil {
		t.Fatalf("kv %v: %v", args, err)
	}
	return v
}

// kvPid asks kv which process answers.
func kvPid(t *testing.T, addr string) int {
	t.Helper()
	info := kvDo(t, addr, "INFO").Str
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatalf("INFO without process_id: %q", info)
	return 0
}

// children lists the pids whose parent is pid, and which of them are zombies.
func children(pid int) (all, zombies []int) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == pid {
			all = append(all, n)
			if f[0] == "Z" {
				zombies = append(zombies, n)
			}
		}
	}
	return all, zombies
}

func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// fdsBackTo waits, within waitTimeout, until process pid holds at most
// limit fds, and fails with what it holds then. Closing is not instant:
// rs closes a control connection just after its reply, and a reaped
// process's pidfd just after the exit event, so a count taken at once
// may still see them; a leak stays above limit for good.
func fdsBackTo(t *testing.T, pid, limit int, what string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		n := fdCount(t, pid)
		if n <= limit {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("rs fds grew from %d to %d %s", limit, n, what)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(b), ") Z ")
}

func readExe(pid int) (string, error) {
	return os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
}
