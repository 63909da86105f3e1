package proc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// rs replaces its own image in place (update-self): execve keeps the
// pid, so the services stay its children; it ends every thread but the
// one that calls it. PR_SET_PDEATHSIG fires when the thread that forked
// a child ends, even when another thread of the process lives on, so
// the thread that forks must be the one that execs, in this image and
// in every next one. That is the main thread: the one thread an exec
// from it keeps, and the one the runtime never ends. Main runs the
// spawner there for good; every fork and the exec go to it.

var mainSpawner bool

// Main runs f in a goroutine and serves every fork and exec of the
// process (Start, Exec) on the calling goroutine, which must be the main
// goroutine locked to the main thread (runtime.LockOSThread in an init
// of package main). It never returns: f ends the process (os.Exit).
func Main(f func()) {
	runtime.LockOSThread()
	if unix.Gettid() != unix.Getpid() {
		panic("proc.Main: not on the main thread (lock it in an init of package main)")
	}
	spawnOnce.Do(func() {
		mainSpawner = true
		closeOnExecInherited()
	})
	go f()
	spawner()
	select {} // spawnCh is never closed
}

// Exec replaces this process's image with path (argv, env), on the
// spawner thread, keeping the fds of keep open across it (their
// FD_CLOEXEC cleared in the exec path only, with every fork of rs
// held off meanwhile). It returns only when the exec failed; keep's
// fds are close-on-exec again then. It needs Main: on a spawner thread
// that is not the main one an exec would end the main thread, and the
// children it forked (PDEATHSIG) with it.
func Exec(path string, argv, env []string, keep []int) error {
	if !mainSpawner {
		return errors.New("exec in place: the spawner is not on the main thread (proc.Main)")
	}
	// No fork (Start, StartCmd) and no orphan scan between the clearing
	// of FD_CLOEXEC and the exec: a child would inherit the fds.
	forkMu.Lock()
	defer forkMu.Unlock()
	// The flocks on rs's cgroup subtrees cross the exec too, so that
	// no other rs takes them for an orphan's meanwhile (cgroup.go).
	if locks := containmentLocks(); len(locks) > 0 {
		keep = append(slices.Clip(keep), locks...)
		env = slices.DeleteFunc(slices.Clone(env), func(v string) bool { return strings.HasPrefix(v, cgLocksEnv+"=") })
		env = append(env, cgLocksEnv+"="+joinInts(locks))
	}
	reply := make(chan spawnRes, 1)
	spawnCh <- spawnReq{exec: &execReq{path: path, argv: argv, env: env, keep: keep}, reply: reply}
	r := <-reply
	return r.err
}

type execReq struct {
	path      string
	argv, env []string
	keep      []int
}

// doExec runs on the spawner thread.
func doExec(e *execReq) spawnRes {
	for i, fd := range e.keep {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			for _, back := range e.keep[:i] {
				unix.CloseOnExec(back)
			}
			return spawnRes{err: fmt.Errorf("keep fd %d open across exec: %w", fd, err)}
		}
	}
	err := syscall.Exec(e.path, e.argv, e.env)
	for _, fd := range e.keep {
		unix.CloseOnExec(fd)
	}
	return spawnRes{err: fmt.Errorf("exec %s: %w", e.path, err)}
}

// Held is what a new image of rs needs to adopt a Process the old one
// started: its pid and cgroups. It crosses the exec in rs's table.
type Held struct {
	Pid    int    `msgpack:"pid"`
	Cgroup string `msgpack:"cgroup,omitempty"` // Process.Cgroup
	V2     string `msgpack:"v2,omitempty"`
	V1Mem  string `msgpack:"v1mem,omitempty"`
	V1Pids string `msgpack:"v1pids,omitempty"`
	OOMV2  bool   `msgpack:"oomv2,omitempty"`
}

// Held says what p is, for Adopt after an exec in place.
func (p *Process) Held() Held {
	h := Held{Pid: p.pid, Cgroup: p.Cgroup}
	if l := p.leaf; l != nil {
		h.V2, h.V1Mem, h.V1Pids, h.OOMV2 = l.v2, l.v1mem, l.v1pids, l.oomV2
	}
	return h
}

// ErrNotChild: Adopt was given a pid that is not an unreaped child of
// this process (it was reaped before the exec, say).
var ErrNotChild = errors.New("not a child of rs")

// Adopt takes over a child the previous image of this process started
// (exec in place keeps children): a pidfd of it, its one waiter, as
// Start's, calling exited once it is reaped. The pid cannot name a
// stranger: a child's pid is not reused before its parent reaps it, and
// waitid says whether it is still ours. Call it before the orphan
// reaper starts, which would take the child for an orphan.
func Adopt(h Held, exited func(Exit)) (*Process, error) {
	InitContainment(nil)
	fd, err := unix.PidfdOpen(h.Pid, 0)
	if err != nil {
		return nil, fmt.Errorf("adopt pid %d: %w", h.Pid, err)
	}
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err != nil {
		unix.Close(fd)
		if err == unix.ECHILD {
			return nil, fmt.Errorf("adopt pid %d: %w", h.Pid, ErrNotChild)
		}
		return nil, fmt.Errorf("adopt pid %d: %w", h.Pid, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("adopt pid %d: %w", h.Pid, err)
	}
	own(h.Pid)
	p := &Process{pid: h.Pid, done: make(chan struct{}), extended: make(chan struct{}, 1), exited: exited,
		Cgroup: h.Cgroup, pidfd: os.NewFile(uintptr(fd), "pidfd")}
	if h.V2 != "" || h.V1Mem != "" || h.V1Pids != "" {
		p.leaf = &leaf{rel: h.Cgroup, v2: h.V2, v2fd: -1, v1mem: h.V1Mem, v1pids: h.V1Pids, oomV2: h.OOMV2}
		// Leaves are named <name>.<n>: the next ones made here must not
		// take an adopted one's name.
		for _, d := range []string{h.V2, h.V1Mem, h.V1Pids} {
			if i := strings.LastIndexByte(filepath.Base(d), '.'); d != "" && i >= 0 {
				if n, err := strconv.ParseUint(filepath.Base(d)[i+1:], 10, 64); err == nil {
					for {
						cur := cgSeq.Load()
						if cur >= n || cgSeq.CompareAndSwap(cur, n) {
							break
						}
					}
				}
			}
		}
	}
	go p.wait()
	return p, nil
}
