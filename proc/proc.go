package proc

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// FirstFD is the fd number Spec.Files[0] gets in the child; the others
// follow in order.
const FirstFD = 3

var (
	ErrDone    = errors.New("process already exited")
	ErrNoStart = errors.New("cannot start")
)

// Spec says how to start one process.
type Spec struct {
	Path   string   // absolute path of the binary
	Args   []string // argv[1:]; argv[0] is Path
	Env    []string // the whole environment
	Dir    string
	Files  []*os.File // become fds FirstFD, FirstFD+1, ... in the child
	Stdout *os.File   // nil: this process's stdout
	Stderr *os.File   // nil: this process's stderr
	// Limits are set on the child after its execve and before the
	// program's first instruction (see Start): soft and hard alike.
	Limits []Limit
	// Name names the process's cgroups (any text; it is made safe).
	Name string
	// Memory (bytes) and Pids (processes) limit the process and all its
	// descendants together, by cgroup, where a memory or pids controller
	// is available to rs (Containment tells); 0: no limit.
	Memory uint64
	Pids   int
	// Exited, if set, is called by the process's waiter once the process
	// is reaped, after Done is closed: a way to hear of the end without a
	// goroutine of one's own waiting on Done.
	Exited func(Exit)

	// Credential, if set, is the uid, gid and supplementary groups the
	// child runs with (changing them needs root).
	Credential *syscall.Credential
	// Umask, if set (0 to 0777), is the child's umask; nil: rs's own.
	Umask *int
	// PidEnv are variables set to the child's own pid in its
	// environment (LISTEN_PID for sd_listen_fds(3), WATCHDOG_PID for
	// sd_watchdog_enabled(3)), written before its first instruction (see
	// Start and pidenv.go). The caller's Env must not hold them.
	PidEnv []string
}

// Limit is one resource limit (unix.RLIMIT_*).
type Limit struct {
	Resource int
	Value    uint64
}

// Process is a started child: the leader of its own process group. One
// goroutine, started by Start, waits for it; Done is closed when it has
// been reaped and every other member of its group has been sent SIGKILL.
type Process struct {
	pid  int
	done chan struct{}
	exit Exit

	mu     sync.Mutex
	reaped bool
	pidfd  *os.File // nil when the kernel has no pidfd

	exited func(Exit)

	// Cgroup is the process's cgroup v2 leaf, relative to the v2 mount,
	// as the 0:: line of /proc/<pid>/cgroup shows it; "" when it has
	// none (containment by process group).
	Cgroup string
	leaf   *leaf

	// A graceful stop's waits end no sooner than extendTo (Extend);
	// extended wakes a wait to look again.
	extendTo time.Time
	extended chan struct{}
}

// Exit is how a process ended.
type Exit struct {
	Code   int            // exit code when Signal is 0
	Signal syscall.Signal // the signal that killed it, or 0
	Core   bool
	CPU    time.Duration // user and system CPU time it used
	// OOMKills is how many of its processes the memory controller of its
	// cgroup killed (0 without one).
	OOMKills int
}

// Success is a clean exit 0.
func (e Exit) Success() bool { return e.Signal == 0 && e.Code == 0 }

func (e Exit) String() string {
	if e.Signal != 0 {
		s := unix.SignalName(e.Signal)
		if s == "" {
			s = fmt.Sprintf("signal %d", int(e.Signal))
		}
		if e.Core {
			s += " (core dumped)"
		}
		return s
	}
	return fmt.Sprintf("exit %d", e.Code)
}

// Start starts the process described by spec in a new process group, with
// stdin on /dev/null, spec.Files from FirstFD on and nothing else
// inherited (every fd this process opens is close-on-exec). The child gets SIGKILL
// if rs dies, so no service outlives rs unsupervised. Where rs has cgroup
// v2 the child is born into a leaf cgroup of its own (Process.Cgroup).
// Its rlimits, and its v1 cgroups where those hold its limits, are in
// place before the program's first instruction.
func Start(spec Spec) (*Process, error) {
	InitContainment(nil)
	leaf, err := newLeaf(spec.Name, spec.Memory, spec.Pids)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Path, err)
	}
	p, err := startIn(spec, leaf)
	if err != nil {
		if leaf != nil {
			leaf.remove()
		}
		return nil, err
	}
	return p, nil
}

func startIn(spec Spec, leaf *leaf) (*Process, error) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Path, err)
	}
	defer devnull.Close()
	stdout, stderr := spec.Stdout, spec.Stderr
	if stdout == nil {
		stdout = os.Stdout
	}
	if stderr == nil {
		stderr = os.Stderr
	}
	files := []uintptr{devnull.Fd(), stdout.Fd(), stderr.Fd()}
	for _, f := range spec.Files {
		files = append(files, f.Fd())
	}
	pidfd := -1
	env := spec.Env
	env = withPidPlaceholders(env, spec.PidEnv)
	attr := &syscall.ProcAttr{
		Dir:   spec.Dir,
		Env:   env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			Setpgid:    true,
			Pdeathsig:  syscall.SIGKILL,
			PidFD:      &pidfd,
			Credential: spec.Credential,
		},
	}
	if leaf != nil && leaf.v2fd >= 0 {
		// CLONE_INTO_CGROUP: the child is in its leaf from birth.
		attr.Sys.UseCgroupFD = true
		attr.Sys.CgroupFD = leaf.v2fd
	}
	var atExec func(int) error
	if len(spec.Limits) > 0 || leaf.needsJoin() || len(spec.PidEnv) > 0 {
		atExec = func(pid int) error {
			if err := writePidEnv(pid, env, len(spec.PidEnv)); err != nil {
				return err
			}
			for _, l := range spec.Limits {
				rl := unix.Rlimit{Cur: l.Value, Max: l.Value}
				if err := unix.Prlimit(pid, l.Resource, &rl, nil); err != nil {
					return fmt.Errorf("limit %d: %w", l.Resource, err)
				}
			}
			if leaf != nil {
				return leaf.join(pid)
			}
			return nil
		}
	}
	argv := append([]string{spec.Path}, spec.Args...)
	umask := -1
	if spec.Umask != nil {
		umask = *spec.Umask & 0o777
	}
	// From the fork until the pid is owned, the orphan reaper waits
	// (reaper.go): it must not take this child for an orphan.
	forkMu.RLock()
	defer forkMu.RUnlock()
	pid, err := startLocked(spec.Path, argv, attr, atExec, umask, len(spec.PidEnv) > 0)
	runtime.KeepAlive(spec.Files)
	runtime.KeepAlive(stdout)
	runtime.KeepAlive(stderr)
	leaf.closeFD()
	if err != nil {
		if pid > 0 {
			unix.Kill(-pid, syscall.SIGKILL)
			leaf.kill()
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WALL, nil)
			if leaf != nil && leaf.v2 != "" {
				waitEmpty(leaf.v2, emptyBound)
			}
		}
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
		return nil, fmt.Errorf("start %s: %w", spec.Path, err)
	}
	own(pid) // until its waiter has reaped it
	p := &Process{pid: pid, done: make(chan struct{}), extended: make(chan struct{}, 1), exited: spec.Exited, leaf: leaf}
	if leaf != nil {
		p.Cgroup = leaf.rel
	}
	if pidfd >= 0 {
		if err := unix.SetNonblock(pidfd, true); err == nil {
			p.pidfd = os.NewFile(uintptr(pidfd), "pidfd")
		} else {
			unix.Close(pidfd)
		}
	}
	go p.wait()
	return p, nil
}

// Pid is the process id, which is also its process group id.
func (p *Process) Pid() int { return p.pid }

// Done is closed once the process has been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exit tells how the process ended; valid once Done is closed.
func (p *Process) Exit() Exit {
	<-p.done
	return p.exit
}

// Exiting tells whether the process has begun to exit (the kernel's
// PF_EXITING on its main thread), before it can be reaped. Its pid cannot
// have been reused: rs, its parent, has not reaped it. A process that is
// gone or reaped counts as exiting.
func (p *Process) Exiting() bool {
	select {
	case <-p.done:
		return true
	default:
	}
	// Plain syscalls, not os.ReadFile: this is on the way to a standby's
	// take-over, and os.ReadFile adds an fstat and a try at the poller.
	fd, err := unix.Open("/proc/"+strconv.Itoa(p.pid)+"/stat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return true
	}
	var buf [1024]byte
	n, err := unix.Read(fd, buf[:])
	unix.Close(fd)
	if err != nil || n <= 0 {
		return true
	}
	flags, ok := statFlags(buf[:n])
	return !ok || flags&pfExiting != 0
}

// pfExiting is PF_EXITING of include/linux/sched.h.
const pfExiting = 0x4

// statFlags returns field 9 (flags) of a /proc/<pid>/stat line. The
// command name, field 2, may hold spaces and parentheses: the fields
// after it start after its last ')'.
func statFlags(b []byte) (uint64, bool) { return statField(b, 9) }

// statField is field n (numbered from 1, as proc(5) does) of the
// contents b of /proc/<pid>/stat, a number; false if b has none.
// Fields are counted after the ")" that ends the command name, which
// may hold spaces and parentheses itself.
func statField(b []byte, n int) (uint64, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || n < 3 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:])) // field 3 on
	if len(f) < n-2 {
		return 0, false
	}
	v, err := strconv.ParseUint(f[n-3], 10, 64)
	return v, err == nil
}

// Signal sends sig to the process only.
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return ErrDone
	}
	if p.pidfd != nil {
		return unix.PidfdSendSignal(int(p.pidfd.Fd()), sig, nil, 0)
	}
	return unix.Kill(p.pid, sig)
}

// SignalGroup sends sig to the whole process group. Until the leader is
// reaped its pid cannot be reused, so this never hits a stranger.
func (p *Process) SignalGroup(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return ErrDone
	}
	err := unix.Kill(-p.pid, sig)
	if err == unix.ESRCH {
		return ErrDone
	}
	return err
}

// Kill sends SIGKILL to the whole group.
func (p *Process) Kill() { _ = p.SignalGroup(syscall.SIGKILL) }

// Stop ends the process within a bound: ask (a stop message, may be nil)
// and wait grace, then sig (0: SIGTERM) to the group and wait grace, then
// SIGKILL. It returns how the process ended.
func (p *Process) Stop(ask func() error, sig syscall.Signal, grace time.Duration) Exit {
	if ask != nil {
		_ = ask()
	}
	if p.waitFor(grace) {
		return p.exit
	}
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	_ = p.SignalGroup(sig)
	_ = p.SignalGroup(syscall.SIGCONT) // a stopped group cannot act on SIGTERM
	if p.waitFor(grace) {
		return p.exit
	}
	p.Kill()
	return p.Exit()
}

// Extend makes the wait of a graceful stop under way (Stop) last at
// least d from now: the service asked for more time (systemd's
// EXTEND_TIMEOUT_USEC). It never blocks.
func (p *Process) Extend(d time.Duration) {
	p.mu.Lock()
	if by := time.Now().Add(d); by.After(p.extendTo) {
		p.extendTo = by
	}
	p.mu.Unlock()
	select {
	case p.extended <- struct{}{}:
	default:
	}
}

// waitFor reports whether the process is reaped within d, or by the
// time Extend asked for if that is later.
func (p *Process) waitFor(d time.Duration) bool {
	by := time.Now().Add(d)
	for {
		p.mu.Lock()
		if p.extendTo.After(by) {
			by = p.extendTo
		}
		p.mu.Unlock()
		t := time.NewTimer(time.Until(by))
		select {
		case <-p.done:
			t.Stop()
			return true
		case <-p.extended:
			t.Stop()
		case <-t.C:
			p.mu.Lock()
			more := p.extendTo.After(time.Now())
			p.mu.Unlock()
			if !more {
				return false
			}
		}
	}
}

// wait is the one waiter of this child.
func (p *Process) wait() {
	if p.pidfd != nil {
		p.waitPidfd()
	} else {
		p.waitPid()
	}
	// cgroup.kill went out with the group's SIGKILL; populated 0 says
	// the last of the tree is gone.
	p.exit.OOMKills = p.leaf.finish()
	close(p.done)
	if p.exited != nil {
		p.exited(p.exit)
	}
}

func (p *Process) waitPidfd() {
	raw, err := p.pidfd.SyscallConn()
	if err == nil {
		// The pidfd turns readable when the process exits; until then the
		// runtime's poller holds this goroutine, not a thread.
		err = raw.Read(func(fd uintptr) bool {
			var info unix.Siginfo
			for {
				e := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
				if e == unix.EINTR {
					continue
				}
				return e != unix.EAGAIN && (e != nil || siginfoPid(&info) != 0)
			}
		})
	}
	if err != nil {
		// On any error the blocking waitid below still reaps, but the
		// group is killed first: say so, it is not the process's doing.
		slog.Warn("proc: the wait on a pidfd failed; killing its group and reaping", "pid", p.pid, "err", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = unix.Kill(-p.pid, syscall.SIGKILL) // stragglers of the group
	p.leaf.kill()                          // and of the cgroup, setsid or not
	_ = unix.SetNonblock(int(p.pidfd.Fd()), false)
	var info unix.Siginfo
	var ru unix.Rusage
	for {
		e := unix.Waitid(unix.P_PIDFD, int(p.pidfd.Fd()), &info, unix.WEXITED, &ru)
		if e != unix.EINTR {
			if e != nil {
				p.exit = Exit{Code: -1}
			} else {
				p.exit = exitFromSiginfo(&info)
				p.exit.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			}
			break
		}
	}
	p.reaped = true
	disown(p.pid)
	p.pidfd.Close()
}

func (p *Process) waitPid() {
	var ws unix.WaitStatus
	var ru unix.Rusage
	for {
		// WNOWAIT keeps the leader a zombie, so its pid (the group id)
		// stays ours while the stragglers are killed.
		var info unix.Siginfo
		e := unix.Waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if e != unix.EINTR {
			break
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = unix.Kill(-p.pid, syscall.SIGKILL)
	p.leaf.kill()
	for {
		_, e := unix.Wait4(p.pid, &ws, 0, &ru)
		if e != unix.EINTR {
			break
		}
	}
	switch {
	case ws.Signaled():
		p.exit = Exit{Signal: ws.Signal(), Core: ws.CoreDump()}
	default:
		p.exit = Exit{Code: ws.ExitStatus()}
	}
	p.exit.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	p.reaped = true
	disown(p.pid)
}
