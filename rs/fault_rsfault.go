//go:build rsfault

package rs

// FaultPanic makes rs's loop panic (test builds only, -tags rsfault):
// the path of a bug in the loop.
func (s *Server) FaultPanic() {
	s.post(evProbe{f: func() { panic("rsfault: a panic in the loop, as asked") }, done: make(chan struct{})})
}
