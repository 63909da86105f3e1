package main

// The peers: runit's runsv and s6's s6-supervise, supervising the same kv
// binary standalone (no rs channel in its environment), for the crash,
// update and scale comparisons. Each supervisor is a child of the bench,
// given a service directory of its own whose run script execs the
// service; neither runit nor s6 is ever started as init or as a scanner.
// If a peer is missing, install-peers.sh installs Debian's runit or s6
// once; if it is still missing, its columns are skipped with a note.
//
// Stopping a supervisor: "dx" into supervise/control (down, then exit,
// which both understand), at most peerStopWait for it to exit, then
// SIGKILL; and every process it ever ran that the bench saw is killed if
// it is still there.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/internal/resp"
)

const peerStopWait = 5 * time.Second

// tools are the outside programs, by name; a missing one has a reason in
// missing.
type tools struct {
	path    map[string]string
	missing map[string]string
}

// peerPackages: which Debian package brings which program.
var peerPackages = []struct{ prog, pkg string }{
	{"runsv", "runit"},
	{"s6-supervise", "s6"},
	{"s6-svc", "s6"},
	{"s6-notifyoncheck", "s6"},
	{"svlogd", "runit"},
	{"s6-log", "s6"},
	{"redis-benchmark", "redis-tools"},
	{"wrk", "wrk"},
	{"ab", "apache2-utils"},
}

// findTools looks the peers up, runs install-peers.sh once for the
// packages of the missing ones, and looks again.
func (b *bench) findTools() {
	b.tools = tools{path: map[string]string{}, missing: map[string]string{}}
	var pkgs []string
	for _, p := range peerPackages {
		if path, err := exec.LookPath(p.prog); err == nil {
			b.tools.path[p.prog] = path
		} else if !strings.Contains(strings.Join(pkgs, " "), p.pkg) {
			pkgs = append(pkgs, p.pkg)
		}
	}
	if len(pkgs) == 0 {
		return
	}
	why := ""
	if root, err := moduleRoot(b.ctx); err != nil {
		why = err.Error()
	} else {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Minute)
		defer cancel()
		script := filepath.Join(root, "tests", "bench", "install-peers.sh")
		fmt.Fprintf(os.Stderr, "bench: installing %s (%s)\n", strings.Join(pkgs, " "), script)
		out, err := exec.CommandContext(ctx, "sh", append([]string{script}, pkgs...)...).CombinedOutput()
		if err != nil {
			why = fmt.Sprintf("%s %s failed: %v: %s", script, strings.Join(pkgs, " "), err, bytes.TrimSpace(out))
		}
	}
	for _, p := range peerPackages {
		if _, ok := b.tools.path[p.prog]; ok {
			continue
		}
		if path, err := exec.LookPath(p.prog); err == nil {
			b.tools.path[p.prog] = path
			b.notes = append(b.notes, fmt.Sprintf("installed %s (Debian package %s) for the bench", p.prog, p.pkg))
			continue
		}
		reason := why
		if reason == "" {
			reason = "install-peers.sh ran, and it is still not on $PATH"
		}
		b.tools.missing[p.prog] = fmt.Sprintf("%s not found (Debian package %s): %s", p.prog, p.pkg, reason)
		fmt.Fprintf(os.Stderr, "bench: %s is missing: its columns are skipped\n", p.prog)
	}
}

// supervised is one service directory under runsv or s6-supervise.
type supervised struct {
	kind string // "runsv" or "s6-supervise"
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
	seen map[int]string // pids of its services the bench saw, → their exe
}

// supervise writes dir/run (execing argv) and starts kind on dir.
func (b *bench) supervise(kind, dir string, argv ...string) (*supervised, error) {
	return b.superviseReady(kind, dir, "", argv...)
}

// superviseReady is supervise, and for s6-supervise with ready (a kv
// address) not empty, readiness notification too: s6 restarts at once
// only a service that has been ready for a second, and pauses a second
// before respawning any other. kv does not notify, so s6-notifyoncheck
// polls it (data/check: this binary, asking PING) from
// readyCheckPause after the start, and notifies s6 once it answers.
func (b *bench) superviseReady(kind, dir, ready string, argv ...string) (*supervised, error) {
	prog := b.tools.path[kind]
	if prog == "" {
		return nil, errors.New(b.tools.missing[kind])
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if ready != "" {
		notify := b.tools.path["s6-notifyoncheck"]
		self, err := os.Executable()
		if notify == "" || err != nil || kind != "s6-supervise" {
			return nil, fmt.Errorf("readiness: needs s6-supervise and s6-notifyoncheck (%s; %v)", b.tools.missing["s6-notifyoncheck"], err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
			return nil, err
		}
		check := fmt.Sprintf("#!/bin/sh\nexec env %s=%s %s\n", checkEnv, shellQuote(ready), shellQuote(self))
		if err := os.WriteFile(filepath.Join(dir, "data", "check"), []byte(check), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "notification-fd"), []byte("3\n"), 0o644); err != nil {
			return nil, err
		}
		ms := strconv.Itoa(int(readyCheckPause / time.Millisecond))
		argv = append([]string{notify, "-d", "-s", ms, "-w", ms, "-n", "0"}, argv...)
	}
	var q []string
	for _, a := range argv {
		q = append(q, shellQuote(a))
	}
	run := "#!/bin/sh\nexec " + strings.Join(q, " ") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "run"), []byte(run), 0o755); err != nil {
		return nil, err
	}
	return b.startSupervisor(kind, dir, nil, nil)
}

// startSupervisor starts kind on dir, whose run script is written, with
// stdin and stdout (nil: /dev/null and dir.log) for it and its service;
// its stderr goes to dir.log.
func (b *bench) startSupervisor(kind, dir string, stdin, stdout *os.File) (*supervised, error) {
	prog := b.tools.path[kind]
	if prog == "" {
		return nil, errors.New(b.tools.missing[kind])
	}
	logf, err := os.Create(dir + ".log")
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(prog, dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if stdin != nil {
		cmd.Stdin = stdin
	}
	if stdout != nil {
		cmd.Stdout = stdout
	}
	// No RS_CHANNEL_FD can leak in: the bench has none, and says so.
	cmd.Env = withoutEnv(os.Environ(), "RS_CHANNEL_FD")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &supervised{kind: kind, dir: dir, cmd: cmd, done: make(chan struct{}), seen: map[int]string{}}
	go func() { cmd.Wait(); close(s.done) }()
	return s, nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// readyCheckPause: s6-notifyoncheck's first check and the pause between
// checks. Not shorter, so that its checks do not compete with kv's start
// for the CPU while the bench times that start.
const readyCheckPause = 50 * time.Millisecond

// checkEnv makes this binary the readiness check: PING the kv at the
// address it names, exit 0 on PONG; or, for "line:ADDR", ask the
// sdnotify fixture at ADDR (linePid), exit 0 on its answer; or, for
// "http:HOST:PORT", exit 0 on a count from httpcount there.
const checkEnv = "RSBENCH_CHECK"

const httpCheck = "http:"

func checkMain() {
	if addr, ok := strings.CutPrefix(os.Getenv(checkEnv), httpCheck); ok {
		if _, err := probeCount("http://" + addr + "/"); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	if addr, ok := strings.CutPrefix(os.Getenv(checkEnv), lineCheck); ok {
		if _, err := linePid(resp.SplitAddr(addr)); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	network, address := resp.SplitAddr(os.Getenv(checkEnv))
	c, err := resp.Dial(network, address, time.Second)
	if err != nil {
		os.Exit(1)
	}
	c.SetDeadline(time.Now().Add(time.Second))
	if v, err := c.Do("PING"); err != nil || v.Str != "PONG" {
		os.Exit(1)
	}
	os.Exit(0)
}

func withoutEnv(env []string, name string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, name+"=") {
			out = append(out, e)
		}
	}
	return out
}

// saw records a pid of the service, to kill at the end if it is left.
func (s *supervised) saw(pid int) {
	if _, ok := s.seen[pid]; !ok && pid > 0 {
		s.seen[pid] = exeOf(pid)
	}
}

// children records the supervisor's current children and returns them.
func (s *supervised) children() []int {
	kids := childrenOf(s.cmd.Process.Pid)
	for _, k := range kids {
		s.saw(k)
	}
	return kids
}

// stop ends the service and the supervisor; what went wrong is returned
// for the notes.
func (s *supervised) stop() []string {
	var probs []string
	select {
	case <-s.done:
		probs = append(probs, fmt.Sprintf("%s %s had exited before the bench stopped it", s.kind, filepath.Base(s.dir)))
	default:
		s.children()
		ctl := filepath.Join(s.dir, "supervise", "control")
		if f, err := os.OpenFile(ctl, os.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
			f.WriteString("dx")
			f.Close()
		}
		select {
		case <-s.done:
		case <-time.After(peerStopWait):
			s.cmd.Process.Kill()
			<-s.done
			probs = append(probs, fmt.Sprintf("%s %s did not exit within %v of dx; killed it", s.kind, filepath.Base(s.dir), peerStopWait))
		}
	}
	// Its services got SIGTERM on d; give them a moment, then make sure.
	deadline := time.Now().Add(2 * time.Second)
	for pid, exe := range s.seen {
		for alive(pid, exe) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if alive(pid, exe) {
			unix.Kill(pid, unix.SIGKILL)
			probs = append(probs, fmt.Sprintf("%s %s: its service pid %d was still there; killed it", s.kind, filepath.Base(s.dir), pid))
		}
	}
	return probs
}

// --- /proc ---

// exeOf is the executable of pid, "" if it cannot be read.
func exeOf(pid int) string {
	p, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return p
}

// alive: pid exists, is not a zombie, and still runs exe (not a reused
// pid).
func alive(pid int, exe string) bool {
	return unix.Kill(pid, 0) == nil && !isZombie(pid) && (exe == "" || exeOf(pid) == exe)
}

// statFields returns the fields of /proc/pid/stat after the command
// name: index 0 is the state (field 3 of proc(5)).
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

func isZombie(pid int) bool {
	f := statFields(pid)
	return len(f) == 0 || f[0] == "Z"
}

// childrenOf scans /proc for the processes whose parent is pid.
func childrenOf(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(p); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			kids = append(kids, p)
		}
	}
	return kids
}

// cpuTicks is utime+stime of pid (all its threads), in clock ticks.
func cpuTicks(pid int) (int64, error) {
	f := statFields(pid)
	// utime and stime are fields 14 and 15 of proc(5): 11 and 12 here.
	if len(f) < 13 {
		return 0, fmt.Errorf("pid %d: no /proc stat", pid)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return u + s, nil
}

// taskNs sums the run time of pid's threads from their schedstat, in
// nanoseconds: finer than cpuTicks for processes that run a few
// microseconds a second, which round to no tick at all. Threads that
// have exited are not counted.
func taskNs(pid int) (int64, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, e.Name()))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			sum += n
		}
	}
	return sum, nil
}

// clockTick is the unit of cpuTicks (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// memKiB reads a "Name:  N kB" line of /proc/pid/status (VmRSS) or
// smaps_rollup (Pss).
func memKiB(pid int, file, name string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("pid %d: no %s in %s", pid, name, file)
}

func rssKiB(pid int) (int64, error) { return memKiB(pid, "status", "VmRSS") }
func pssKiB(pid int) (int64, error) { return memKiB(pid, "smaps_rollup", "Pss") }
