package proc

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Helper roles: the test binary re-executed as a child.
func TestMain(m *testing.M) {
	switch os.Getenv("PROC_TEST_ROLE") {
	case "":
		code := m.Run()
		ReleaseContainment()
		os.Exit(code)
	case "exit":
		n, _ := strconv.Atoi(os.Getenv("PROC_TEST_ARG"))
		os.Exit(n)
	case "sleep":
		for {
			time.Sleep(time.Hour) // block forever, without tripping deadlock detection
		}
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		for {
			time.Sleep(time.Hour) // block forever, without tripping deadlock detection
		}
	case "fork":
		// A child in the same group that would outlive us.
		self, _ := os.Executable()
		c := exec.Command(self)
		c.Env = []string{"PROC_TEST_ROLE=sleep"}
		if err := c.Start(); err != nil {
			os.Exit(2)
		}
		fmt.Println(c.Process.Pid)
		os.Stdout.Sync()
		for {
			time.Sleep(time.Hour) // block forever, without tripping deadlock detection
		}
	case "setsid":
		// A child that leaves the group and the session.
		self, _ := os.Executable()
		c := exec.Command(self)
		c.Env = []string{"PROC_TEST_ROLE=sleep"}
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := c.Start(); err != nil {
			os.Exit(2)
		}
		fmt.Println(c.Process.Pid)
		os.Stdout.Sync()
		for {
			time.Sleep(time.Hour) // block forever, without tripping deadlock detection
		}
	case "reaper-stress":
		os.Exit(reaperStress())
	case "fds":
		// List our open fds (except the one ReadDir itself uses).
		ents, _ := os.ReadDir("/proc/self/fd")
		var names []string
		for _, e := range ents {
			// Skip what the Go runtime opens in the child itself.
			if t, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && !strings.HasPrefix(t, "/proc/") && !strings.HasPrefix(t, "anon_inode:") && !strings.HasPrefix(t, "/sys/fs/cgroup/") {
				names = append(names, e.Name())
			}
		}
		fmt.Println(strings.Join(names, ","), os.Getenv("PROC_TEST_FD"))
		os.Exit(0)
	}
	os.Exit(99)
}

func start(t *testing.T, role, arg string, stdout *os.File) *Process {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start(Spec{
		Path:   self,
		Env:    []string{"PROC_TEST_ROLE=" + role, "PROC_TEST_ARG=" + arg},
		Stdout: stdout,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		waitDone(t, p)
	})
	return p
}

func waitDone(t *testing.T, p *Process) Exit {
	t.Helper()
	select {
	case <-p.Done():
		return p.Exit()
	case <-time.After(10 * time.Second):
		t.Fatalf("pid %d did not end", p.Pid())
	}
	return Exit{}
}

func TestExitReasons(t *testing.T) {
	if got := waitDone(t, start(t, "exit", "3", nil)); got.String() != "exit 3" {
		t.Errorf("exit: %v", got)
	}
	p := start(t, "sleep", "", nil)
	p.Signal(syscall.SIGKILL)
	if got := waitDone(t, p); got.String() != "SIGKILL" || got.Success() {
		t.Errorf("kill: %v", got)
	}
	if err := p.Signal(syscall.SIGTERM); err != ErrDone {
		t.Errorf("signal after reap: %v, want ErrDone", err)
	}
}

func readLine(t *testing.T, r *os.File) string {
	t.Helper()
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	buf := make([]byte, 1)
	for {
		n, err := r.Read(buf)
		if err != nil {
			t.Fatalf("read child output: %v (so far %q)", err, b.String())
		}
		if n == 1 && buf[0] == '\n' {
			return b.String()
		}
		b.Write(buf[:n])
	}
}

func pipe(t *testing.T) (*os.File, *os.File) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

func TestGroupDiesWithLeader(t *testing.T) {
	r, w := pipe(t)
	p := start(t, "fork", "", w)
	child, err := strconv.Atoi(readLine(t, r))
	if err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGKILL) // the leader only: its group must follow
	waitDone(t, p)
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(child, 0) == nil {
		// The grandchild is re-parented away from us, so we cannot wait
		// for it; poll for its end with a bound.
		if stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child)); strings.Contains(string(stat), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %d of the group survived its leader", child)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestStopEscalates(t *testing.T) {
	r, w := pipe(t)
	p := start(t, "ignore-term", "", w)
	readLine(t, r)
	asked := false
	begin := time.Now()
	got := p.Stop(func() error { asked = true; return nil }, 0, 50*time.Millisecond)
	if !asked || got.String() != "SIGKILL" {
		t.Fatalf("Stop: asked %v, exit %v", asked, got)
	}
	if d := time.Since(begin); d < 100*time.Millisecond {
		t.Fatalf("SIGKILL came after %v, before two grace periods", d)
	}
	p2 := start(t, "sleep", "", nil)
	if got := p2.Stop(nil, 0, 5*time.Second); got.String() != "SIGTERM" {
		t.Fatalf("Stop of a process that obeys SIGTERM: %v", got)
	}
	p3 := start(t, "sleep", "", nil)
	if got := p3.Stop(nil, syscall.SIGINT, 10*time.Millisecond); got.String() != "SIGINT" {
		t.Fatalf("Stop with SIGINT as its signal: %v", got)
	}
}

func TestOnlyChannelInherited(t *testing.T) {
	r, w := pipe(t)
	a, b, err := os.Pipe() // stands in for the channel
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	self, _ := os.Executable()
	p, err := Start(Spec{Path: self, Env: []string{"PROC_TEST_ROLE=fds", "PROC_TEST_FD=3"}, Stdout: w, Files: []*os.File{b}})
	if err != nil {
		t.Fatal(err)
	}
	if got := readLine(t, r); got != "0,1,2,3 3" {
		t.Fatalf("child fds and $PROC_TEST_FD: %q, want \"0,1,2,3 3\"", got)
	}
	waitDone(t, p)
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestNoFDLeak(t *testing.T) {
	before := countFDs(t)
	for i := 0; i < 50; i++ {
		p := start(t, "sleep", "", nil)
		p.Kill()
		waitDone(t, p)
	}
	if after := countFDs(t); after > before {
		t.Fatalf("fds grew from %d to %d over 50 start/kill cycles", before, after)
	}
}

func TestStartMissingBinary(t *testing.T) {
	_, err := Start(Spec{Path: "/nonexistent/binary"})
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("Start of a missing binary: %v", err)
	}
	// Traced for its limits, and with a cgroup: the same error, no leaf left.
	_, err = Start(Spec{Path: "/nonexistent/binary", Name: "missing", Memory: 1 << 30, Limits: []Limit{{Resource: 7, Value: 64}}})
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("Start of a missing binary with limits: %v", err)
	}
	if cg.v2 != "" {
		if ents, _ := os.ReadDir(cg.v2); hasLeaf(ents, "missing.") {
			t.Fatal("a failed start left its cgroup")
		}
	}
}

func hasLeaf(ents []os.DirEntry, prefix string) bool {
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), prefix) {
			return true
		}
	}
	return false
}

func TestStatFlags(t *testing.T) {
	for line, want := range map[string]uint64{
		"42 (kv) S 1 42 42 0 -1 4194560 12 0":      4194560,
		"42 (a b) c)) R 1 42 42 0 -1 4194308 12 0": 4194308,
		"42 (x) Z 1 42 42 0 -1 4 0":                4,
	} {
		if got, ok := statFlags([]byte(line)); !ok || got != want {
			t.Errorf("%q: %d, %v; want %d", line, got, ok, want)
		}
	}
	if _, ok := statFlags([]byte("42 (kv) S 1")); ok {
		t.Error("a short line parsed")
	}
}

// A live process is not exiting; once killed and reaped it is.
func TestExiting(t *testing.T) {
	p := start(t, "sleep", "", nil)
	if p.Exiting() {
		t.Fatal("a sleeping process reads as exiting")
	}
	p.Kill()
	waitDone(t, p)
	if !p.Exiting() {
		t.Fatal("a reaped process reads as not exiting")
	}
}

// TestStatField: fields of /proc/<pid>/stat are counted after the ")"
// that ends the command, which may hold spaces and ")" itself.
func TestStatField(t *testing.T) {
	b := []byte("42 (a b) c)) S 1 42 42 0 -1 4194560 7 0 0 0")
	for _, c := range []struct {
		n    int
		want uint64
		ok   bool
	}{{4, 1, true}, {9, 4194560, true}, {13, 0, true}, {14, 0, false}, {3, 0, false}, {2, 0, false}} {
		if v, ok := statField(b, c.n); v != c.want || ok != c.ok {
			t.Errorf("field %d: %d %v, want %d %v", c.n, v, ok, c.want, c.ok)
		}
	}
	if _, ok := statField([]byte("no paren"), 4); ok {
		t.Error("a stat without ')' gave a field")
	}
}
