package proc

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The orphan reaper. rs is a child subreaper (PR_SET_CHILD_SUBREAPER),
// and PID 1 in a container: a process whose parent dies is reparented to
// rs, and when it exits, only rs can reap it. Those orphans are nobody's
// in rs, so a reaper reaps them; but it must never reap a child that rs
// started itself, or that child's waiter would lose its exit status.
//
// One lock keeps the two apart. Every fork of rs holds forkMu shared
// from before the fork until the child's pid is in owned (proc's Start,
// StartCmd for os/exec); a child leaves owned only after its own waiter
// has reaped it. The reaper holds forkMu alone while it lists rs's
// children (/proc/self/task/*/children) and reaps, with waitid(P_PID,
// pid, WEXITED|WNOHANG), only those not in owned. So every child it can
// see is either registered or an orphan: no fork is between the two
// steps while it looks. A pid whose owner reaped it just after the list
// was read is no child of rs any more, and waitid says ECHILD; a pid
// reused meanwhile can only be an orphan (rs's forks wait for the lock).
var (
	forkMu  sync.RWMutex
	ownedMu sync.Mutex
	owned   = map[int]int{} // pid -> how many holders (a pid reused before its disown)
)

func own(pid int) {
	ownedMu.Lock()
	owned[pid]++
	ownedMu.Unlock()
}

func disown(pid int) {
	ownedMu.Lock()
	if owned[pid]--; owned[pid] <= 0 {
		delete(owned, pid)
	}
	ownedMu.Unlock()
}

func isOwned(pid int) bool {
	ownedMu.Lock()
	defer ownedMu.Unlock()
	return owned[pid] > 0
}

// StartCmd starts cmd (os/exec) so that the orphan reaper leaves it to
// cmd.Wait: every os/exec child of rs must be started with it and waited
// for with WaitCmd. Children started by Start need nothing.
func StartCmd(cmd *exec.Cmd) error {
	forkMu.RLock()
	defer forkMu.RUnlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	own(cmd.Process.Pid)
	return nil
}

// WaitCmd is cmd.Wait for a cmd started by StartCmd.
func WaitCmd(cmd *exec.Cmd) error {
	err := cmd.Wait()
	disown(cmd.Process.Pid)
	return err
}

// SetSubreaper makes this process a child subreaper: orphans among its
// descendants are reparented to it rather than to PID 1.
func SetSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("PR_SET_CHILD_SUBREAPER: %w", err)
	}
	return nil
}

// Reaper reaps the orphans reparented to this process, woken by SIGCHLD,
// off any caller's loop. NewReaper starts it; Stop ends it.
type Reaper struct {
	log    *slog.Logger
	sigs   chan os.Signal
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	reaped int
}

// NewReaper starts the orphan reaper (a goroutine). Call SetSubreaper
// first unless this process is PID 1.
func NewReaper(log *slog.Logger) *Reaper {
	if log == nil {
		log = slog.Default()
	}
	r := &Reaper{log: log, sigs: make(chan os.Signal, 1), stop: make(chan struct{}), done: make(chan struct{})}
	signal.Notify(r.sigs, syscall.SIGCHLD)
	go r.run()
	return r
}

// Stop ends the reaper and waits for it.
func (r *Reaper) Stop() {
	signal.Stop(r.sigs)
	close(r.stop)
	<-r.done
}

// Reaped is how many orphans the reaper has reaped so far.
func (r *Reaper) Reaped() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reaped
}

func (r *Reaper) run() {
	defer close(r.done)
	r.scan() // orphans that came before the first SIGCHLD was caught
	for {
		select {
		case <-r.stop:
			return
		case <-r.sigs:
			r.scan()
		}
	}
}

// scan reaps every exited child that no one in this process owns.
// SIGCHLDs coalesce, so one scan takes all that are there.
func (r *Reaper) scan() {
	forkMu.Lock()
	defer forkMu.Unlock()
	for _, pid := range childPids() {
		if isOwned(pid) {
			continue
		}
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WALL, nil)
		for err == unix.EINTR {
			err = unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WALL, nil)
		}
		if err != nil || siginfoPid(&info) == 0 {
			continue // still running, or not ours any more
		}
		r.mu.Lock()
		r.reaped++
		r.mu.Unlock()
		r.log.Debug("reaped an orphan", "pid", pid, "exit", exitFromSiginfo(&info).String())
	}
}

// childPids lists the children of every thread of this process. Without
// the children files (a kernel without CONFIG_PROC_CHILDREN) it looks
// for this process as the parent in /proc/<pid>/stat.
func childPids() []int {
	files, _ := filepath.Glob("/proc/self/task/*/children")
	if len(files) == 0 {
		return childPidsByStat()
	}
	var pids []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread exited; its children went to another
		}
		for _, w := range bytes.Fields(b) {
			if pid, err := strconv.Atoi(string(w)); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func childPidsByStat() []int {
	self := uint64(os.Getpid())
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if ppid, ok := statField(b, 4); ok && ppid == self {
			pids = append(pids, pid)
		}
	}
	return pids
}
