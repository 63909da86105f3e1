package proc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Children get SIGKILL when the thread that forked them exits
// (PR_SET_PDEATHSIG is tied to the thread, not the process). Go may retire
// a thread whose goroutine exits while locked to it, so every fork happens
// on one thread that is locked for the life of the process and never
// exits: the spawner below. It is started once and lives as long as rs.
type spawnReq struct {
	path string
	argv []string
	attr *syscall.ProcAttr
	// atExec, if set, runs once the child has exec'd and before it runs
	// its first instruction (see spawnOne).
	atExec func(pid int) error
	// umask, if not -1, is the child's umask (set on the spawner thread
	// around the fork; see spawner).
	umask int
	// needStop: atExec must run at the exec stop, never after exec
	// (it writes the child's environment).
	needStop bool
	// exec, if set, makes this request an exec in place (self.go).
	exec  *execReq
	reply chan spawnRes
}

type spawnRes struct {
	pid int
	err error
}

var (
	spawnOnce sync.Once
	spawnCh   = make(chan spawnReq)
	// ptraceRefused is set once PTRACE_TRACEME failed with EPERM (Yama
	// ptrace_scope 3, a seccomp filter): from then on atExec runs right
	// after exec instead, racing the program's first instructions.
	ptraceRefused atomic.Bool
	// noPtrace, for tests, makes spawns act as if ptrace were refused.
	noPtrace bool
)

// The spawner thread has a filesystem context (cwd, root, umask) of its
// own (unshare(CLONE_FS)), so that it can set a child's umask around
// the fork without touching rs's: a child copies its forking thread's
// umask, and the runtime makes no thread from a locked one (newm hands
// that to its template thread). Without the unshare (refused), a spawn
// that asks for a umask fails.
var spawnerFS error

func spawner() {
	runtime.LockOSThread() // never unlocked: this thread must not exit
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		spawnerFS = fmt.Errorf("unshare(CLONE_FS) of the spawner thread: %w", err)
	}
	for r := range spawnCh {
		if r.exec != nil {
			r.reply <- doExec(r.exec)
			continue
		}
		r.reply <- spawnUmask(r)
	}
}

// spawnUmask is spawnOne with the child's umask in force on this thread
// for the fork.
func spawnUmask(r spawnReq) spawnRes {
	if r.umask < 0 {
		return spawnOne(r)
	}
	if spawnerFS != nil {
		return spawnRes{0, fmt.Errorf("umask: %w", spawnerFS)}
	}
	old := unix.Umask(r.umask)
	defer unix.Umask(old)
	return spawnOne(r)
}

// spawnOne forks and execs on the spawner thread. With atExec the child
// calls PTRACE_TRACEME just before execve: a successful execve then stops
// it with SIGTRAP before its first instruction, this thread (its tracer)
// runs atExec (rlimits, cgroups), and detaches with no signal, so the
// program starts with everything already in force.
func spawnOne(r spawnReq) spawnRes {
	if r.atExec == nil {
		pid, _, err := syscall.StartProcess(r.path, r.argv, r.attr)
		return spawnRes{pid, err}
	}
	if !ptraceRefused.Load() && !noPtrace {
		r.attr.Sys.Ptrace = true
		pid, _, err := syscall.StartProcess(r.path, r.argv, r.attr)
		r.attr.Sys.Ptrace = false
		if err == nil {
			return spawnRes{pid, atExecStop(pid, r.atExec)}
		}
		if !errors.Is(err, syscall.EPERM) {
			return spawnRes{pid, err}
		}
		// The child failed at PTRACE_TRACEME or at execve itself: an
		// untraced try tells them apart.
		pid, _, err = syscall.StartProcess(r.path, r.argv, r.attr)
		if err != nil {
			return spawnRes{pid, err}
		}
		if !ptraceRefused.Swap(true) {
			slog.Warn("proc: ptrace refused (EPERM): limits and cgroups are applied right after exec, racing the program's first instructions", "binary", r.path)
		}
		if r.needStop {
			unix.Kill(pid, unix.SIGKILL)
			return spawnRes{pid, errNoExecStop}
		}
		return spawnRes{pid, r.atExec(pid)}
	}
	if r.needStop {
		return spawnRes{0, errNoExecStop}
	}
	pid, _, err := syscall.StartProcess(r.path, r.argv, r.attr)
	if err != nil {
		return spawnRes{pid, err}
	}
	return spawnRes{pid, r.atExec(pid)}
}

// atExecStop waits for the traced child's stop after execve, runs f and
// detaches. If f fails the child is killed; Start reaps it.
func atExecStop(pid int, f func(int) error) error {
	var info unix.Siginfo
	var err error
	for {
		// WNOWAIT: an exit (it was killed) stays for the reaper.
		err = unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WSTOPPED|unix.WNOWAIT|unix.WALL, nil)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("wait for exec stop: %w", err)
	}
	if code := siginfoCode(&info); code != cldTrapped && code != cldStopped {
		return fmt.Errorf("ended before its first instruction: %v", exitFromSiginfo(&info))
	}
	// Take the stop off the wait queue; exits stay there.
	var consumed unix.Siginfo
	_ = unix.Waitid(unix.P_PID, pid, &consumed, unix.WSTOPPED|unix.WNOHANG|unix.WALL, nil)
	err = f(pid)
	if err != nil {
		unix.Kill(pid, unix.SIGKILL)
	}
	if e := unix.PtraceDetach(pid); e != nil && err == nil && e != unix.ESRCH {
		unix.Kill(pid, unix.SIGKILL)
		err = fmt.Errorf("ptrace detach: %w", e)
	}
	return err
}

func startLocked(path string, argv []string, attr *syscall.ProcAttr, atExec func(int) error, umask int, needStop bool) (int, error) {
	spawnOnce.Do(func() {
		closeOnExecInherited()
		go spawner()
	})
	reply := make(chan spawnRes, 1)
	spawnCh <- spawnReq{path: path, argv: argv, attr: attr, atExec: atExec, umask: umask, needStop: needStop, reply: reply}
	r := <-reply
	return r.pid, r.err
}

// closeOnExecInherited marks close-on-exec every fd above stderr. Go opens
// its own fds close-on-exec, but fds this process inherited from its parent
// are not, and must not reach the services.
func closeOnExecInherited() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}

// siginfo_t for SIGCHLD: si_code at 8, si_pid at 16, si_status at 24.
func siginfoBytes(info *unix.Siginfo) []byte {
	return (*[unsafe.Sizeof(unix.Siginfo{})]byte)(unsafe.Pointer(info))[:]
}

func siginfoCode(info *unix.Siginfo) int32 {
	return int32(binary.NativeEndian.Uint32(siginfoBytes(info)[8:]))
}

func siginfoPid(info *unix.Siginfo) int {
	return int(int32(binary.NativeEndian.Uint32(siginfoBytes(info)[16:])))
}

func exitFromSiginfo(info *unix.Siginfo) Exit {
	b := siginfoBytes(info)
	code := int32(binary.NativeEndian.Uint32(b[8:]))
	status := int(int32(binary.NativeEndian.Uint32(b[24:])))
	switch code {
	case cldExited:
		return Exit{Code: status}
	case cldDumped:
		return Exit{Signal: syscall.Signal(status), Core: true}
	default: // CLD_KILLED
		return Exit{Signal: syscall.Signal(status)}
	}
}

// si_code values of SIGCHLD (asm-generic/siginfo.h).
const (
	cldExited  = 1
	cldDumped  = 3
	cldTrapped = 4
	cldStopped = 5
)
