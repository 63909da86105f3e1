package rs

import (
	"fmt"
	"runtime/debug"
	"strconv"
)

// A panic in the loop is a bug in rs. Dying of it would kill every
// service (PDEATHSIG), so the loop recovers (handleSafe), logs the
// panic with its stack, and rs re-execs its own binary (the very one it
// runs, through its fd of it, whatever is at its path now) with its
// table, as update-self does (the same freeze, table and exec; no
// --check-table of its own binary). The event that panicked is lost, and
// whatever it had half changed in the table goes with the table: what
// the re-exec buys is a fresh heap and goroutines, not a fixed bug. If
// the re-exec is refused (something under way that cannot be carried)
// or fails, rs logs why and goes on with the loop as it is; the next
// panic tries again.

func (s *Server) panicked(r any, ev event) {
	why := fmt.Sprintf("panic: %v", r)
	s.log.Error("rs: a panic in the loop (a bug in rs); re-executing with the table", "panic", fmt.Sprint(r),
		"event", fmt.Sprintf("%T", ev), "stack", string(debug.Stack()))
	if s.reexecing.Swap(true) {
		return
	}
	bin := s.exePath
	if s.exe != nil {
		bin = "/proc/self/fd/" + strconv.Itoa(rawFD(s.exe))
	}
	go func() {
		defer s.reexecing.Store(false)
		err := s.updateSelf(bin, newToken(), why, nil, func(string) {})
		s.log.Error("rs: no re-exec after the panic; going on as it is", "err", err)
	}()
}
