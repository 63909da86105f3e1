package sefhttp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/reincarnation/rs/sef"
	"github.com/reincarnation/rs/sef/handoff"
)

// DefaultShutdownTimeout bounds a graceful stop's wait for requests in
// flight.
const DefaultShutdownTimeout = 5 * time.Second

// stateMagic starts sefhttp's state; a version that cannot read it
// refuses the update, and the old one carries on.
const stateMagic = "sefhttp-1\n"

// Server runs an http.Server under sef. Fields with a zero value take the
// default.
type Server struct {
	// HTTP is the server to run; its Handler serves. sefhttp sets its
	// ConnState (calling the one set here too) and serves it on the
	// listener below.
	HTTP *http.Server
	// Network and Addr to listen on (sef's Listen: "tcp" by default).
	Network, Addr string
	// Save writes the service's own state at an update's quiescent point
	// (no request in flight anywhere); Restore reads it in the new
	// instance. Both nil: no state of its own.
	Save    func(w io.Writer) error
	Restore func(r io.Reader) error
	// Logger for sefhttp and sef; default slog.Default().
	Logger *slog.Logger
	// ShutdownTimeout bounds a graceful stop; default
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// OnListen, if set, is called with the listener's address once it
	// serves.
	OnListen func(net.Addr)
	// Options go to sef.Startup (after sefhttp's own WithLogger).
	Options []sef.Option
}

// Run starts sef, listens, and serves until the service is stopped (rs's
// stop, an update's commit, SIGTERM or SIGINT; it returns nil then) or
// ctx ends (ctx.Err()). Call it from main, once.
func (srv *Server) Run(ctx context.Context) error {
	log := srv.Logger
	if log == nil {
		log = slog.Default()
	}
	var svc *sef.Service
	g := handoff.New(handoff.IdleReads, func() { svc.Reached() })
	var restored []handoff.Restored
	cb := g.Callbacks(sef.Callbacks{
		InitLiveUpdate: func(_ *sef.Service, in sef.Init) (err error) {
			restored, err = srv.restore(in.State)
			return err
		},
		LUStateSave: func(_ *sef.Service, w *sef.StateWriter) error { return srv.save(g, w) },
	})
	s, err := sef.Startup(ctx, cb, append([]sef.Option{sef.WithLogger(log)}, srv.Options...)...)
	if err != nil {
		for _, rc := range restored {
			rc.Conn.Close()
		}
		return err
	}
	svc = s
	g.HoldUntil(s.Committed()) // a group update's new instance serves from the commit
	network := srv.Network
	if network == "" {
		network = "tcp"
	}
	ln, err := s.Listen(network, srv.Addr)
	if err != nil {
		for _, rc := range restored {
			rc.Conn.Close()
		}
		return err
	}
	hl := g.Listener(ln)
	for _, rc := range restored {
		hl.Inject(g.Adopt(rc.Conn, rc.Unread))
	}
	hs := srv.HTTP
	user := hs.ConnState
	hs.ConnState = func(c net.Conn, st http.ConnState) {
		if hc, ok := c.(*handoff.Conn); ok && (st == http.StateNew || st == http.StateIdle) {
			hc.SetIdle() // between requests: an update may take it
		}
		if user != nil {
			user(c, st)
		}
	}
	// The receive loop has no work of its own (handlers run on
	// net/http's goroutines); it answers rs until a stop, or until Serve
	// fails.
	rctx, stopLoop := context.WithCancel(ctx)
	defer stopLoop()
	served := make(chan error, 1)
	go func() {
		served <- hs.Serve(hl)
		stopLoop()
	}()
	s.Logger().Info("serving http", "addr", ln.Addr().String(), "handed_over", len(restored))
	if srv.OnListen != nil {
		srv.OnListen(ln.Addr())
	}
	var runErr error
	for runErr == nil {
		_, runErr = s.Receive(rctx)
	}
	if ctx.Err() == nil && rctx.Err() != nil {
		runErr = fmt.Errorf("http: %w", <-served)
	}
	// Connections parked for an update (all of them, after a commit) are
	// the new instance's now: let them go without a word (closing our
	// copy of a socket sends the client nothing). Then finish the
	// requests in flight.
	g.Close()
	timeout := srv.ShutdownTimeout
	if timeout <= 0 {
		timeout = DefaultShutdownTimeout
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		s.Logger().Warn("http: requests still in flight at exit", "err", err)
		hs.Close()
	}
	if errors.Is(runErr, sef.ErrStopped) {
		s.Logger().Info("stopped", "why", runErr)
		return nil
	}
	return runErr
}

// save writes the state: the service's own, then the idle connections.
func (srv *Server) save(g *handoff.Group, w *sef.StateWriter) error {
	var own bytes.Buffer
	if srv.Save != nil {
		if err := srv.Save(&own); err != nil {
			return err
		}
	}
	b := append([]byte(stateMagic), binary.AppendUvarint(nil, uint64(own.Len()))...)
	b = append(b, own.Bytes()...)
	b, err := g.AppendState(b, w)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// restore reads what save wrote.
func (srv *Server) restore(st *sef.StateReader) ([]handoff.Restored, error) {
	raw, err := io.ReadAll(st)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	closeFDs := func() {
		for _, f := range st.FDs {
			f.Close()
		}
	}
	rest, ok := bytes.CutPrefix(raw, []byte(stateMagic))
	if !ok {
		closeFDs()
		return nil, errors.New("state: not a sefhttp state (or another version's)")
	}
	n, k := binary.Uvarint(rest)
	if k <= 0 || n > uint64(len(rest)-k) {
		closeFDs()
		return nil, errors.New("state: cut short")
	}
	own := rest[k : k+int(n)]
	conns, _, err := handoff.Decode(rest[k+int(n):], st.FDs)
	closeFDs() // any the state did not name
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if srv.Restore != nil {
		if err := srv.Restore(bytes.NewReader(own)); err != nil {
			for _, rc := range conns {
				rc.Conn.Close()
			}
			return nil, fmt.Errorf("restore: %w", err)
		}
	}
	return conns, nil
}
