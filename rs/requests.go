package rs

import (
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// requestTimeout bounds how long a control client may take to send its
// request.
const requestTimeout = 5 * time.Second

// serveConn answers one control connection: check the peer, read one
// request, hand it to the loop, relay progress and the final reply.
func (s *Server) serveConn(c *net.UnixConn) {
	defer c.Close()
	send := func(r Reply) bool {
		b, err := msgpack.Marshal(&r)
		if err != nil {
			s.log.Error("control socket: reply not encoded", "err", err)
			return false
		}
		c.SetWriteDeadline(time.Now().Add(requestTimeout))
		if _, err = c.Write(b); err != nil {
			s.log.Warn("control socket: reply lost", "err", err)
			return false
		}
		return true
	}
	c.SetReadDeadline(time.Now().Add(requestTimeout))
	buf := make([]byte, MaxRequest+1)
	n, err := c.Read(buf)
	// The request is read even from a refused peer: closing a socket with
	// unread data resets it, and the peer would never see why.
	if perr := checkPeer(c); perr != nil {
		s.log.Warn("control client refused", "err", perr)
		send(Reply{Err: perr.Error(), Done: true})
		return
	}
	if err != nil {
		send(Reply{Err: fmt.Sprintf("%v: %v", ErrBadRequest, err), Done: true})
		return
	}
	req, err := DecodeRequest(buf[:n])
	if err != nil {
		send(Reply{Err: err.Error(), Done: true})
		return
	}
	prog := make(chan string, 16)
	reply := make(chan Reply, 1)
	s.post(evRequest{req: req, reply: reply, prog: prog})
	final := func(r Reply) {
		// Progress sent before the reply is in prog already.
		for drained := false; !drained; {
			select {
			case p := <-prog:
				send(Reply{Progress: p})
			default:
				drained = true
			}
		}
		// Long tables go in several packets; the last one is Done.
		for len(r.Services) > statusRowsPacket {
			if !send(Reply{Services: r.Services[:statusRowsPacket]}) {
				return
			}
			r.Services = r.Services[statusRowsPacket:]
		}
		send(r)
	}
	for {
		select {
		case p := <-prog:
			send(Reply{Progress: p})
		case r := <-reply:
			final(r)
			return
		case <-s.done:
			select {
			case r := <-reply: // the loop answered as it ended (shutdown)
				final(r)
			default:
				send(Reply{Err: ErrShutdown.Error(), Done: true})
			}
			return
		}
	}
}

// request runs one control command inside the loop. Commands that finish
// later (up, down, restart, shutdown) keep ev.reply and answer then.
func (s *Server) request(ev evRequest) {
	reply := func(r Reply, err error) {
		if err != nil {
			r.Err = err.Error()
		}
		r.Done = true
		ev.reply <- r
	}
	req := ev.req
	if s.shutdown != nil && req.Op != OpStatus {
		if req.Op == OpShutdown {
			s.shutdown.replies = append(s.shutdown.replies, ev.reply)
			return
		}
		reply(Reply{}, ErrShutdown)
		return
	}
	switch req.Op {
	case OpStatus:
		st, err := s.statuses(req.Label)
		reply(Reply{Services: st, Daemon: s.daemon()}, err)
	case OpShutdown:
		s.beginShutdown(ev.reply)
	case OpUp:
		s.up(req, ev.reply)
	case OpDown:
		s.down(req.Label, ev.reply)
	case OpRestart:
		s.restart(req.Label, ev.reply)
	case OpUpdate:
		s.startUpdate(req, ev)
	case OpClone, OpUnclone:
		m, err := s.clone(req.Label, req.Op == OpClone)
		reply(Reply{Message: m}, err)
	default:
		reply(Reply{}, fmt.Errorf("%w: %q", ErrBadRequest, req.Op))
	}
}

func fail(r chan<- Reply, err error) { r <- Reply{Err: err.Error(), Done: true} }

// up starts a service, adding it to the table if it is new. The reply
// comes when its init has succeeded or failed.
func (s *Server) up(req Request, r chan<- Reply) {
	svc, known := s.services[req.Label]
	if known && svc.state != StateDown && svc.state != StateFailed {
		fail(r, fmt.Errorf("%s is already up (%s)", req.Label, svc.state))
		return
	}
	var spec Spec
	if known {
		spec = svc.spec
	} else {
		if req.Binary == "" {
			fail(r, fmt.Errorf("%w %q: give --binary to add it", ErrUnknown, req.Label))
			return
		}
		spec = Spec{Label: req.Label, Period: DefaultPeriod}
		if err := CheckLabel(req.Label); err != nil {
			fail(r, err)
			return
		}
	}
	if req.Binary != "" {
		if !filepath.IsAbs(req.Binary) {
			fail(r, fmt.Errorf("binary %q: path must be absolute", req.Binary))
			return
		}
		spec.Binary = req.Binary
	}
	if req.HasArgs {
		spec.Args = req.Args
	}
	if req.HasPeriod {
		if req.Period < 0 {
			fail(r, fmt.Errorf("period %v: must not be negative", req.Period))
			return
		}
		spec.Period = req.Period
		spec.PingTimeout = 0 // follows the period again
	}
	if req.Restart != "" {
		p, err := ParseRestart(req.Restart)
		if err != nil {
			fail(r, err)
			return
		}
		spec.Restart = p
	}
	if req.Depends != nil {
		spec.Depends = req.Depends
	}
	if req.Memory > 0 {
		spec.Memory = req.Memory
	}
	if req.OpenFiles > 0 {
		spec.OpenFiles = req.OpenFiles
	}
	if req.CPUTime > 0 {
		spec.CPUTime = req.CPUTime
	}
	for _, d := range spec.Depends {
		dep, ok := s.services[d]
		switch {
		case d == req.Label:
			fail(r, fmt.Errorf("%s cannot depend on itself", d))
			return
		case !ok:
			fail(r, fmt.Errorf("dependency %q: %w", d, ErrUnknown))
			return
		case dep.state != StateRunning:
			fail(r, fmt.Errorf("dependency %s is not running (%s)", d, dep.state))
			return
		}
	}
	if err := checkBinary(spec.Binary); err != nil {
		fail(r, err)
		return
	}
	if !known {
		svc = s.add(spec)
	} else {
		s.dropStandby(svc) // it runs the old spec
		svc.spec = spec.withDefaults()
	}
	svc.lastExit = ""
	svc.fails = 0
	svc.history = nil
	svc.started = false
	svc.upWaiters = append(svc.upWaiters, r)
	s.spawn(svc)
}

func (s *Server) down(label string, r chan<- Reply) {
	svc, ok := s.services[label]
	if !ok {
		fail(r, fmt.Errorf("%w %q", ErrUnknown, label))
		return
	}
	if svc.update != nil {
		fail(r, fmt.Errorf("%s is being updated: %w; try again when the update is done", label, ErrBusy))
		return
	}
	s.replyUp(svc, Reply{Err: label + ": stopped by down"})
	s.dropStandby(svc)
	s.stop(svc, func() {
		svc.state = StateDown
		s.dropFDStore(svc)
		r <- Reply{Done: true, Message: label + " down"}
	})
}

// restart stops a running service gracefully and starts it again; for a
// failed, backing-off or down service it is a start with cleared backoff.
func (s *Server) restart(label string, r chan<- Reply) {
	svc, ok := s.services[label]
	if !ok {
		fail(r, fmt.Errorf("%w %q", ErrUnknown, label))
		return
	}
	if svc.state == StateStopping || svc.update != nil {
		fail(r, fmt.Errorf("%s is %s: %w", label, svc.state, ErrBusy))
		return
	}
	if dep := s.missingDep(svc); dep != "" {
		fail(r, fmt.Errorf("dependency %s is not running", dep))
		return
	}
	s.replyUp(svc, Reply{Err: label + ": restarted"})
	s.dropStandby(svc)
	s.stop(svc, func() {
		svc.fails = 0
		svc.history = nil
		svc.lastExit = ""
		svc.upWaiters = append(svc.upWaiters, r)
		if svc.started {
			svc.restarts++
		}
		s.spawn(svc)
	})
}
