package proc

import (
	"encoding/binary"
	"os"
	"runtime"
	"strconv"
	"sync"
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
	path  string
	argv  []string
	attr  *syscall.ProcAttr
	reply chan spawnRes
}

type spawnRes struct {
	pid int
	err error
}

var (
	spawnOnce sync.Once
	spawnCh   = make(chan spawnReq)
)

func spawner() {
	runtime.LockOSThread() // never unlocked: this thread must not exit
	for r := range spawnCh {
		pid, _, err := syscall.StartProcess(r.path, r.argv, r.attr)
		r.reply <- spawnRes{pid, err}
	}
}

func startLocked(path string, argv []string, attr *syscall.ProcAttr) (int, error) {
	spawnOnce.Do(func() {
		closeOnExecInherited()
		go spawner()
	})
	reply := make(chan spawnRes, 1)
	spawnCh <- spawnReq{path, argv, attr, reply}
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
	cldExited = 1
	cldDumped = 3
)
