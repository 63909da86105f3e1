package rs

import (
	"fmt"

	"github.com/reincarnation/rs/rs/control"
)

// logTargets is the loop's answer to a logs request: where the files
// are and whose to read, or why not.
type logTargets struct {
	dir    string
	labels []string
	err    error
}

// HandleStream answers a request whose reply is streamed (a
// control.StreamHandler): events (observe.go), or logs. The loop says which services and where
// (logTargets); the files are read here, on the connection's goroutine.
func (s *Server) HandleStream(req control.Request, peer control.Peer, out *control.Stream) control.Reply {
	if req.Op == control.OpEvents {
		return s.streamEvents(req, peer, out)
	}
	if req.Op != control.OpLogs {
		return control.Failure(fmt.Errorf("%w: %s is not streamed", control.ErrInvalid, req.Op))
	}
	targets := func() (logTargets, error) {
		reply := make(chan logTargets, 1)
		s.post(evLogTargets{req: req, peer: peer, reply: reply})
		select {
		case t := <-reply:
			return t, t.err
		case <-s.done:
			return logTargets{}, control.ErrShutdown
		}
	}
	t, err := targets()
	if err != nil {
		return control.Failure(err)
	}
	var more func() ([]string, error)
	if req.Label == "" && req.Follow {
		more = func() ([]string, error) {
			t, err := targets()
			return t.labels, err
		}
	}
	return streamLogs(t.dir, t.labels, req, out, s.done, more)
}

// logTargets answers evLogTargets, in the loop: the label asked for, or
// every label ("").
func (s *Server) logTargets(ev evLogTargets) {
	var t logTargets
	refused := s.refused(ev.req.Op, ev.peer)
	switch label := ev.req.Label; {
	case refused != nil:
		t.err = refused
	case s.logDir == "":
		t.err = control.Errorf(control.CodeRefused, "rs keeps no log files (started without a log directory)")
	case label == "":
		t.dir, t.labels = s.logDir, append([]string(nil), s.order...)
	case s.services[label] == nil:
		t.err = fmt.Errorf("%w %q", control.ErrUnknown, label)
	default:
		t.dir, t.labels = s.logDir, []string{label}
	}
	ev.reply <- t // room for it: never blocks
}
