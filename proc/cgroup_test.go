package proc

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// buildC compiles a C program (static, so it starts in microseconds:
// the fastest a program can race its own limits) into t's directory.
func buildC(t *testing.T, name, src string) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc to build the test program")
	}
	dir := t.TempDir()
	c := filepath.Join(dir, name+".c")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	if b, err := exec.Command("gcc", "-O2", "-static", "-o", out, c).CombinedOutput(); err != nil {
		if b2, err := exec.Command("gcc", "-O2", "-o", out, c).CombinedOutput(); err != nil {
			t.Fatalf("gcc: %v\n%s\n%s", err, b, b2)
		}
	}
	return out
}

// firstSrc, at its first instruction, maps 1 GiB, reads its cgroups and
// limits, and forks a child that does the same and reports.
const firstSrc = `#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
static int bigmap(void) {
	void *p = mmap(0, 1UL << 30, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p != MAP_FAILED;
}
int main(void) {
	int mapped = bigmap();
	char cg[1024] = {0};
	int f = open("/proc/self/cgroup", O_RDONLY);
	if (f >= 0) { read(f, cg, sizeof cg - 1); close(f); }
	for (char *c = cg; *c; c++) if (*c == '\n') *c = ';';
	struct rlimit d, n;
	getrlimit(RLIMIT_DATA, &d);
	getrlimit(RLIMIT_NOFILE, &n);
	int fd[2];
	if (pipe(fd)) return 2;
	pid_t c = fork();
	if (c == 0) {
		struct rlimit cd, cn;
		getrlimit(RLIMIT_DATA, &cd);
		getrlimit(RLIMIT_NOFILE, &cn);
		dprintf(fd[1], "%llu/%llu/%d", (unsigned long long)cd.rlim_cur, (unsigned long long)cn.rlim_cur, bigmap());
		_exit(0);
	}
	close(fd[1]);
	char child[128] = {0};
	read(fd[0], child, sizeof child - 1);
	waitpid(c, 0, 0);
	printf("%d %llu %llu %s %s\n", mapped, (unsigned long long)d.rlim_cur, (unsigned long long)n.rlim_cur, child, cg);
	return 0;
}
`

// TestLimitsFromFirstInstruction: a program's very first act runs under
// its limits, and so does a child it forks at once: 30 of 30 starts.
func TestLimitsFromFirstInstruction(t *testing.T) {
	prog := buildC(t, "first", firstSrc)
	const mem = 50 << 20
	info := Containment()
	for i := 0; i < 30; i++ {
		r, w := pipe(t)
		p, err := Start(Spec{
			Path:   prog,
			Stdout: w,
			Name:   "first",
			Memory: mem,
			Limits: []Limit{{unix.RLIMIT_DATA, mem}, {unix.RLIMIT_NOFILE, 64}},
		})
		if err != nil {
			t.Fatal(err)
		}
		line := readLine(t, r)
		waitDone(t, p)
		f := strings.Fields(line)
		if len(f) < 4 {
			t.Fatalf("start %d: output %q", i, line)
		}
		want := fmt.Sprintf("0 %d 64 %d/64/0", mem, mem)
		if got := strings.Join(f[:4], " "); got != want {
			t.Fatalf("start %d: mapped, data, nofile, child data/nofile/mapped = %q, want %q", i, got, want)
		}
		if info.Memory == ctlV1 {
			cgs := strings.Join(f[4:], " ")
			if !strings.Contains(cgs, "memory:"+strings.TrimPrefix(cg.v1memRel(), "")) {
				t.Fatalf("start %d: not in its v1 memory cgroup at its first instruction: %q", i, cgs)
			}
		}
	}
}

// v1memRel is the path /proc/self/cgroup shows for rs's v1 memory subtree.
func (c *cgroups) v1memRel() string {
	self, _ := os.ReadFile("/proc/self/cgroup")
	_, _, v1 := ownCgroups(self)
	return filepath.Join(v1["memory"], filepath.Base(c.v1mem))
}

// Where ptrace is refused the limits still hold, set right after exec.
func TestLimitsWithoutPtrace(t *testing.T) {
	noPtrace = true
	defer func() { noPtrace = false }()
	self, _ := os.Executable()
	p, err := Start(Spec{Path: self, Env: []string{"PROC_TEST_ROLE=sleep"}, Name: "late", Pids: 20, Limits: []Limit{{unix.RLIMIT_NOFILE, 64}}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { p.Kill(); waitDone(t, p) }()
	var rl unix.Rlimit
	if err := unix.Prlimit(p.Pid(), unix.RLIMIT_NOFILE, nil, &rl); err != nil || rl.Cur != 64 || rl.Max != 64 {
		t.Fatalf("nofile of an untraced start: %+v %v", rl, err)
	}
	if Containment().Pids == ctlV1 {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p.Pid()))
		if !strings.Contains(string(b), "pids:") || !strings.Contains(string(b), "/late.") {
			t.Fatalf("untraced start not in its v1 pids cgroup: %q", b)
		}
	}
}

func needCgroup(t *testing.T) {
	t.Helper()
	if info := Containment(); info.Mode != ContainCgroup {
		t.Skip("no cgroup v2 containment on this host (see the log line of InitContainment)")
	}
}

func gone(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return true
	}
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return strings.Contains(string(stat), ") Z ")
}

// waitGone polls, with a bound, until pid has ended (it is not our
// child: we cannot wait for it).
func waitGone(t *testing.T, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: pid %d survived", what, pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// A grandchild that left the group with setsid is in the cgroup still,
// and is gone by the time Done is closed.
func TestCgroupKillsSetsidGrandchild(t *testing.T) {
	needCgroup(t)
	r, w := pipe(t)
	p := start(t, "setsid", "", w)
	child, err := strconv.Atoi(readLine(t, r))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p.Pid()))
	if err != nil || p.Cgroup == "" || !strings.Contains(string(b), "0::"+p.Cgroup+"\n") {
		t.Fatalf("Process.Cgroup %q, /proc/pid/cgroup %q (%v)", p.Cgroup, b, err)
	}
	p.Signal(syscall.SIGKILL) // the leader only
	waitDone(t, p)
	if !gone(child) {
		t.Fatalf("setsid grandchild %d outlived Done", child)
	}
	if _, err := os.Stat(filepath.Join(cg.v2, filepath.Base(p.Cgroup))); !os.IsNotExist(err) {
		t.Fatalf("leaf cgroup left behind: %v", err)
	}
}

// oomSrc fills 200 MiB of shared memory (not RLIMIT_DATA's, but the
// memory controller's).
const oomSrc = `#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(void) {
	size_t n = 200UL << 20;
	int fd = memfd_create("hog", 0);
	if (fd < 0 || ftruncate(fd, n)) return 2;
	char *p = mmap(0, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) return 3;
	for (size_t i = 0; i < n; i += 4096) p[i] = 1;
	printf("survived\n");
	return 0;
}
`

// An OOM kill is told by the memory controller's count, not guessed.
func TestOOMKillCounted(t *testing.T) {
	if Containment().Memory == "" {
		t.Skip("no memory controller for rs (v2 memory or v1 memory hierarchy)")
	}
	prog := buildC(t, "oom", oomSrc)
	p, err := Start(Spec{Path: prog, Name: "oom", Memory: 50 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if e := waitDone(t, p); e.Signal != syscall.SIGKILL || e.OOMKills < 1 {
		t.Fatalf("exit %v, OOM kills %d; want SIGKILL by the OOM killer", e, e.OOMKills)
	}
	_, w := pipe(t)
	p2, err := Start(Spec{Path: prog, Name: "oom", Memory: 400 << 20, Stdout: w})
	if err != nil {
		t.Fatal(err)
	}
	if e := waitDone(t, p2); !e.Success() || e.OOMKills != 0 {
		t.Fatalf("under a limit it fits: exit %v, OOM kills %d", e, e.OOMKills)
	}
}

// forkSrc forks (children pause) until fork fails or 1000 are made, and
// prints how many it made.
const forkSrc = `#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(void) {
	int n = 0;
	for (; n < 1000; n++) {
		pid_t c = fork();
		if (c < 0) break;
		if (c == 0) { pause(); _exit(0); }
	}
	printf("%d %s\n", n, n < 1000 ? strerror(errno) : "-");
	fflush(stdout);
	pause();
	return 0;
}
`

// The pids limit holds for the whole tree.
func TestPidsLimit(t *testing.T) {
	if Containment().Pids == "" {
		t.Skip("no pids controller for rs")
	}
	prog := buildC(t, "fork", forkSrc)
	r, w := pipe(t)
	p, err := Start(Spec{Path: prog, Name: "bomb", Pids: 50, Stdout: w})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { p.Kill(); waitDone(t, p) }()
	if got := readLine(t, r); got != "49 Resource temporarily unavailable" {
		t.Fatalf("forks under pids 50: %q, want 49 and EAGAIN", got)
	}
}

// Cgroups an rs left when it was SIGKILLed are emptied and removed by
// the next; those of a live rs are left alone.
func TestLeftoversRemoved(t *testing.T) {
	needCgroup(t)
	parent := filepath.Dir(cg.v2)
	dead := exec.Command("/bin/true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	run := func(dir string) *exec.Cmd {
		if err := os.MkdirAll(filepath.Join(dir, "svc.1"), 0o755); err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Open(filepath.Join(dir, "svc.1"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		c := exec.Command(self)
		c.Env = []string{"PROC_TEST_ROLE=sleep"}
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, UseCgroupFD: true, CgroupFD: fd}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	ns := ownPidNS()
	oldDir := filepath.Join(parent, subtreeName(dead.Process.Pid, 1, ns))
	old := run(oldDir)
	// Subtrees of rs processes in another pid namespace (pid 1 there):
	// one alive (it holds its lock: here the test does), one gone
	// (unlocked, a process left in it), one just made (unlocked, no
	// cgroup in it yet).
	foreignLive := filepath.Join(parent, subtreeName(1, 7, ns+1000))
	liveThere := run(foreignLive)
	lock, err := lockDir(foreignLive)
	if err != nil {
		t.Fatal(err)
	}
	foreignGone := filepath.Join(parent, subtreeName(1, 7, ns+1001))
	goneThere := run(foreignGone)
	foreignNew := filepath.Join(parent, subtreeName(1, 7, ns+1002))
	if err := os.Mkdir(foreignNew, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		liveThere.Process.Kill()
		liveThere.Wait()
		unix.Close(lock)
		killCgroup(foreignLive)
		removeTree(foreignLive)
		removeTree(foreignNew)
	})
	liveRS := exec.Command(self) // stands in for another rs, alive
	liveRS.Env = []string{"PROC_TEST_ROLE=sleep"}
	if err := liveRS.Start(); err != nil {
		t.Fatal(err)
	}
	liveStart, _ := startTime(strconv.Itoa(liveRS.Process.Pid))
	liveDir := filepath.Join(parent, subtreeName(liveRS.Process.Pid, liveStart, ns))
	live := run(liveDir)
	t.Cleanup(func() {
		live.Process.Kill()
		live.Wait()
		liveRS.Process.Kill()
		liveRS.Wait()
		removeTree(liveDir)
	})
	waitKilled := func(c *exec.Cmd, what string) chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			err := c.Wait()
			if ws, ok := c.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
				t.Errorf("process in %s: %v", what, err)
			}
		}()
		return done
	}
	oldDone := waitKilled(old, "the dead rs's cgroup")
	goneDone := waitKilled(goneThere, "the cgroup of a gone rs of another pid namespace")
	removeLeftovers(slog.Default(), parent, filepath.Base(cg.v2), ns, true)
	for _, d := range []chan struct{}{oldDone, goneDone} {
		select {
		case <-d:
		case <-time.After(10 * time.Second):
			t.Fatal("a process in a gone rs's cgroup survived")
		}
	}
	for _, d := range []string{oldDir, foreignGone} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Fatalf("the gone rs's subtree %s is still there: %v", d, err)
		}
	}
	if gone(liveThere.Process.Pid) {
		t.Fatal("the service of the live rs of another pid namespace was killed")
	}
	for _, d := range []string{foreignLive, foreignNew} {
		if _, err := os.Stat(d); err != nil {
			t.Fatalf("%s was removed: %v", d, err)
		}
	}
	if gone(live.Process.Pid) {
		t.Fatal("the live rs's service was killed")
	}
	if _, err := os.Stat(liveDir); err != nil {
		t.Fatalf("the live rs's subtree was removed: %v", err)
	}
}

func TestParseMountinfo(t *testing.T) {
	mi := `30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 30 0:37 /sub /sys/fs/cgroup/uni\040fied rw,relatime shared:5 - cgroup2 cgroup2 rw,nsdelegate
`
	ms := parseMountinfo([]byte(mi))
	if len(ms) != 2 || ms[0].fstype != "cgroup" || !hasOpt(ms[0].super, "memory") ||
		ms[1].point != "/sys/fs/cgroup/uni fied" || ms[1].root != "/sub" {
		t.Fatalf("%+v", ms)
	}
	if d := dirOf(ms[1], "/sub/a"); d != "/sys/fs/cgroup/uni fied/a" {
		t.Errorf("dirOf: %q", d)
	}
	if d := dirOf(ms[1], "/other"); d != "" {
		t.Errorf("dirOf outside the mount's root: %q", d)
	}
	v2, ok, v1 := ownCgroups([]byte("4:memory:/a/b\n8:pids,cpu:/\n0::/x\n"))
	if !ok || v2 != "/x" || v1["memory"] != "/a/b" || v1["cpu"] != "/" {
		t.Errorf("ownCgroups: %q %v %v", v2, ok, v1)
	}
	if pid, start, ns, ok := parseSubtree("rs-12-345"); !ok || pid != 12 || start != 345 || ns != 0 {
		t.Errorf("parseSubtree of a name without the namespace")
	}
	if pid, start, ns, ok := parseSubtree(subtreeName(1, 345, 4026531836)); !ok || pid != 1 || start != 345 || ns != 4026531836 {
		t.Errorf("parseSubtree(subtreeName(...))")
	}
	for _, bad := range []string{"rs-12", "rs--1-2", "x-1-2", "rs-a-1", "rs-1-2-0", "rs-1-2-3-4", "rs-1-2-x"} {
		if _, _, _, ok := parseSubtree(bad); ok {
			t.Errorf("parseSubtree(%q) ok", bad)
		}
	}
}
