package tests

import (
	"encoding/json"
	"fmt"
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

// hostHasCgroup2 tells whether this test, as root, should expect rs to
// contain services by cgroup: cgroup2 is mounted (anywhere).
func hostHasCgroup2(t *testing.T) bool {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mi), "\n") {
		if _, after, ok := strings.Cut(line, " - "); ok && strings.HasPrefix(after, "cgroup2 ") {
			return os.Geteuid() == 0
		}
	}
	return false
}

func needCgroups(t *testing.T) {
	t.Helper()
	if !hostHasCgroup2(t) {
		t.Skip("no cgroup v2 on this host (or not root): rs contains services by process group")
	}
}

// waitGone waits, bounded, until pid has ended (a zombie counts as
// ended: it is not ours to reap).
func waitGone(t *testing.T, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: pid %d still runs", what, pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readPidFile waits until path holds a pid other than not, and returns it.
func readPidFile(t *testing.T, path string, not int) int {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		if b, err := os.ReadFile(path); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid != not {
				return pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new pid in %s", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestContainmentReported: status --json says what containment is in
// force, and a service's process is in its own cgroup under rs's.
func TestContainmentReported(t *testing.T) {
	r := startRS(t, "")
	r.mustService("up", "--binary", bin("roles"), "--args", "-role plain", "--period", "0s", "p")
	out := r.mustService("status", "--json")
	var v struct {
		RS map[string]any `json:"rs"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	want := "process-group"
	if hostHasCgroup2(t) {
		want = "cgroup"
	}
	if got := v.RS["containment"]; got != want {
		t.Fatalf("rs.containment %v, want %q", got, want)
	}
	if want != "cgroup" {
		return
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", r.status("p").Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), fmt.Sprintf("/rs-%d-", r.cmd.Process.Pid)) || !strings.Contains(string(b), "/p.") {
		t.Fatalf("service's cgroups: %q", b)
	}
}

// TestSetsidGrandchildDies: a grandchild that left the service's process
// group and session goes with the service on down, on a crash-restart
// and on shutdown.
func TestSetsidGrandchildDies(t *testing.T) {
	needCgroups(t)
	r := startRS(t, "")
	pidFile := filepath.Join(r.dir, "gc.pid")
	r.mustService("up", "--binary", bin("roles"), "--args", "-role setsider "+pidFile, "--period", "0s", "gs")
	gc := readPidFile(t, pidFile, 0)
	r.mustService("down", "gs")
	waitGone(t, gc, "down")

	r.mustService("up", "gs")
	gc = readPidFile(t, pidFile, gc)
	leader := r.status("gs").Pid
	syscall.Kill(leader, syscall.SIGKILL)
	r.waitState("gs", control.StateRunning, leader)
	waitGone(t, gc, "crash-restart")

	gc = readPidFile(t, pidFile, gc)
	r.mustService("shutdown")
	select {
	case <-r.done:
	case <-time.After(waitTimeout):
		t.Fatal("rs did not exit on shutdown")
	}
	waitGone(t, gc, "shutdown")
}

// TestLeftoversOfKilledRS: rs is SIGKILLed under a service with 500
// children in its group and one that called setsid. The service's leader
// dies at once (PDEATHSIG); the rest, orphaned, are killed when rs next
// starts.
func TestLeftoversOfKilledRS(t *testing.T) {
	needCgroups(t)
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep(1)")
	}
	r := startRS(t, "")
	pidFile := filepath.Join(r.dir, "many.pids")
	r.mustService("up", "--binary", bin("roles"), "--args", "-role many "+pidFile+" 500", "--period", "0s", "--init-timeout", "60s", "many")
	leader := r.status("many").Pid
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		pids = append(pids, pid)
	}
	if len(pids) != 501 {
		t.Fatalf("%d pids in %s", len(pids), pidFile)
	}
	r.cmd.Process.Kill()
	<-r.done
	waitGone(t, leader, "the leader after rs's SIGKILL")
	survivors := 0
	for _, pid := range pids {
		if alive(pid) {
			survivors++
		}
	}
	t.Logf("%d of 501 children outlived rs's SIGKILL", survivors)
	startRS(t, "") // the next rs cleans up
	for _, pid := range pids {
		waitGone(t, pid, "after the next rs started")
	}
}

// buildC compiles a C test program with gcc into t's directory.
func buildC(t *testing.T, name, src string) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc to build the test program")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	c := filepath.Join(dir, name+".c")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	if b, err := exec.Command("gcc", "-O2", "-o", out, c).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, b)
	}
	return out
}

// bombSrc forks until fork fails (at most 2000), writes how many it made
// and why it stopped to argv[1], then holds on to them.
const bombSrc = `#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
	int n = 0;
	for (; n < 2000; n++) {
		pid_t c = fork();
		if (c < 0) break;
		if (c == 0) { pause(); _exit(0); }
	}
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
	FILE *f = fopen(tmp, "w");
	if (!f) return 2;
	fprintf(f, "%d %s\n", n, n < 2000 ? strerror(errno) : "-");
	fclose(f);
	rename(tmp, argv[1]);
	pause();
	return 0;
}
`

// TestForkBombContained: a service with pids = 50 forks until it
// cannot; another service, SIGKILLed again and again, comes back every
// time.
func TestForkBombContained(t *testing.T) {
	needCgroups(t)
	bomb := buildC(t, "bomb", bombSrc)
	out := filepath.Join(t.TempDir(), "bomb.out")
	r := startRS(t, fmt.Sprintf(`
[service.bomb]
binary = %q
args = [%q]
period = "0s"
restart = "never"
init_timeout = "60s"
pids = 50

[service.innocent]
binary = "$BIN/roles"
args = ["-role", "plain"]
period = "0s"
max_restarts = 100
backoff_cap = "200ms"
`, bomb, out))
	deadline := time.Now().Add(waitTimeout)
	var got []byte
	for {
		var err error
		if got, err = os.ReadFile(out); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the bomb never reported")
		}
		time.Sleep(5 * time.Millisecond)
	}
	var n int
	var why string
	fmt.Sscanf(string(got), "%d %s", &n, &why)
	if n >= 50 {
		t.Fatalf("the bomb made %d processes under pids = 50 (%q)", n, got)
	}
	pid := r.waitState("innocent", control.StateRunning, 0).Pid
	for i := 0; i < 8; i++ {
		syscall.Kill(pid, syscall.SIGKILL)
		st := r.waitState("innocent", control.StateRunning, pid)
		if strings.Contains(st.LastExit, "resource temporarily unavailable") || st.LastExit != "terminated: SIGKILL" {
			t.Fatalf("innocent after kill %d: last_exit %q", i, st.LastExit)
		}
		pid = st.Pid
	}
}

// oomSrc fills 200 MiB of shared memory: the memory controller's to
// count, not RLIMIT_DATA's.
const oomSrc = `#define _GNU_SOURCE
#include <sys/mman.h>
#include <unistd.h>
int main(void) {
	size_t n = 200UL << 20;
	int fd = memfd_create("hog", 0);
	if (fd < 0 || ftruncate(fd, n)) return 2;
	char *p = mmap(0, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) return 3;
	for (size_t i = 0; i < n; i += 4096) p[i] = 1;
	return 0;
}
`

// TestOOMKilled: a service the OOM killer ended reads oom-killed.
func TestOOMKilled(t *testing.T) {
	needCgroups(t)
	hog := buildC(t, "oom", oomSrc)
	r := startRS(t, fmt.Sprintf(`
[service.hog]
binary = %q
period = "0s"
restart = "never"
memory = "50MiB"
`, hog))
	st := r.waitFor2("hog", func(st control.Status) bool { return st.LastExit != "" })
	if !strings.HasPrefix(st.LastExit, "oom-killed: SIGKILL") {
		t.Fatalf("last_exit %q, want oom-killed", st.LastExit)
	}
}
