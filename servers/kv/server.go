package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/reincarnation/rs/sef/handoff"
)

// service is the part of *sef.Service that the server uses; tests stand
// in a fake for it.
type service interface {
	Post(ctx context.Context, work any) error
	Receive(ctx context.Context) (any, error)
	Reached()
	Committed() <-chan struct{}
	DebugGarbage() error
	DebugCloseChannel() error
}

const (
	// faultAckWait bounds how long a fault waits for its +OK to be
	// written before it strikes anyway.
	faultAckWait = time.Second
	// shutdownWait bounds the wait for connection goroutines at exit (one
	// writing to a client that does not read, say); the process is
	// exiting, so it is left behind after this long.
	shutdownWait = 2 * time.Second
)

// server is the network side of kv plus its main loop.
//
// Goroutines and what they own:
//   - the main loop (run, on the caller's goroutine) owns eng and
//     sleeping, and is the only one to call svc.Receive;
//   - the acceptor owns ln.Accept and starts one goroutine per connection;
//   - each connection goroutine owns its net.Conn's reads and writes.
//
// The acceptor and connection goroutines belong to wg; shutdown closes
// quit, the listener and every connection, then waits for them.
type server struct {
	svc    service
	ln     net.Listener
	log    *slog.Logger
	eng    *engine
	commit func(kind string) // commits a fault; tests replace it

	// afterFunc is time.AfterFunc; tests replace it to end sleeps on cue.
	afterFunc func(time.Duration, func()) stopper
	sleeping  map[*batch]stopper // batches parked in DEBUG SLEEP

	stats connStats
	quit  chan struct{} // closed when the main loop has ended
	// ctx is the network goroutines' context for Post: cancelled with
	// quit, so none stays blocked on a full queue.
	ctx    context.Context
	cancel context.CancelFunc

	// group parks the acceptor and the connection goroutines for a live
	// update (see update.go).
	group *handoff.Group

	mu      sync.Mutex // guards conns and closing, nothing else
	conns   map[net.Conn]struct{}
	closing bool
	wg      sync.WaitGroup
}

// stopper is the part of *time.Timer that a parked sleep needs.
type stopper interface{ Stop() bool }

// Work items for the main loop besides *batch.
type (
	wake         struct{ b *batch } // a DEBUG SLEEP is over
	acceptFailed struct{ err error }
)

type serverConfig struct {
	allowFaults bool
	standalone  bool
	meta        meta // its conns field is filled in by newServer
	log         *slog.Logger
}

func newServer(svc service, ln net.Listener, cfg serverConfig) *server {
	g := handoff.New(handoff.Checkpoints, svc.Reached)
	// A group update's new instance accepts and reads nothing until the
	// group commits: a rollback then loses nothing it answered.
	g.HoldUntil(svc.Committed())
	srv := &server{
		svc:      svc,
		group:    g,
		ln:       g.Listener(ln),
		log:      cfg.log,
		sleeping: make(map[*batch]stopper),
		quit:     make(chan struct{}),
		conns:    make(map[net.Conn]struct{}),
	}
	srv.ctx, srv.cancel = context.WithCancel(context.Background())
	if srv.log == nil {
		srv.log = slog.Default()
	}
	m := cfg.meta
	m.conns = &srv.stats
	m.blocked = func() int { return len(srv.sleeping) }
	if m.now == nil {
		m.now = time.Now
	}
	srv.eng = newEngine(cfg.allowFaults, cfg.standalone, &m)
	srv.commit = srv.commitFault
	srv.afterFunc = func(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }
	return srv
}

// run serves until Receive fails (sef.ErrStopped on a stop) or the
// listener breaks, then shuts the network side down and returns that
// error. It must be called from the goroutine that owns the service.
func (srv *server) run() error {
	srv.wg.Add(1)
	go srv.accept()
	err := srv.loop()
	srv.shutdown()
	return err
}

func (srv *server) loop() error {
	for {
		w, err := srv.svc.Receive(srv.ctx)
		if err != nil {
			return err
		}
		switch w := w.(type) {
		case *batch:
			srv.execute(w)
		case wake:
			if _, ok := srv.sleeping[w.b]; !ok {
				continue // not parked (cannot happen; never resume twice)
			}
			delete(srv.sleeping, w.b)
			w.b.out = appendSimple(w.b.out, "OK")
			w.b.next++
			srv.execute(w.b)
		case acceptFailed:
			return w.err
		default:
			srv.log.Error("unexpected work item", "type", fmt.Sprintf("%T", w))
		}
	}
}

// execute runs a batch's requests from b.next on, in order, then sends
// the replies back. A DEBUG SLEEP parks the batch: a timer posts a wake
// that resumes it here, and the loop serves others meanwhile.
func (srv *server) execute(b *batch) {
	for b.next < len(b.reqs) {
		var eff effect
		b.out, eff = srv.eng.exec(b.reqs[b.next], b.out)
		switch eff.kind {
		case effSleep:
			srv.sleeping[b] = srv.afterFunc(eff.sleep, func() { srv.svc.Post(srv.ctx, wake{b}) })
			return
		case effFault:
			b.out = appendSimple(b.out, "OK")
			b.next++
			srv.deliver(b)
			srv.commit(eff.fault)
			continue // the fault returned (stop, garbage, closechan)
		}
		b.next++
	}
	// Never blocks: the channel has room for every reply of the batch.
	b.replies <- reply{data: b.out}
}

// deliver sends the replies so far ahead of a fault and waits, bounded,
// until the connection has written them, so the client sees +OK before
// the process fails.
func (srv *server) deliver(b *batch) {
	ack := make(chan struct{})
	b.replies <- reply{data: b.out, more: true, ack: ack}
	b.out = nil // the connection may still be writing the old buffer
	t := time.NewTimer(faultAckWait)
	defer t.Stop()
	select {
	case <-ack:
	case <-t.C:
		srv.log.Warn("fault reply not written in time; committing anyway")
	}
}

// accept runs the acceptor until the listener is closed.
func (srv *server) accept() {
	defer srv.wg.Done()
	var delay time.Duration
	for {
		c, err := srv.ln.Accept()
		if err != nil {
			select {
			case <-srv.quit:
				return
			default:
			}
			if !transientAcceptError(err) {
				srv.svc.Post(srv.ctx, acceptFailed{err})
				return
			}
			// Out of fds or buffers: back off as net/http does, rather
			// than spin, and keep serving the connections we have.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			srv.log.Warn("accept failed; retrying", "err", err, "delay", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-srv.quit:
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		hc := c.(*handoff.Conn)
		if !srv.track(hc) {
			hc.Close() // shutting down
			continue
		}
		go srv.serve(hc)
	}
}

func transientAcceptError(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// track registers a new connection and its goroutine; false once the
// server is shutting down.
func (srv *server) track(c net.Conn) bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.closing {
		return false
	}
	srv.conns[c] = struct{}{}
	srv.wg.Add(1) // under mu, so never after shutdown's Wait began
	srv.stats.current.Add(1)
	srv.stats.total.Add(1)
	return true
}

func (srv *server) untrack(c net.Conn) {
	srv.mu.Lock()
	delete(srv.conns, c)
	srv.mu.Unlock()
	c.Close()
	srv.stats.current.Add(-1)
}

// shutdown ends the network side: no new connections, existing ones
// closed, parked sleeps cancelled. Called by the main loop after it ended.
func (srv *server) shutdown() {
	close(srv.quit)
	srv.cancel()
	srv.group.Close() // parked goroutines return
	for b, t := range srv.sleeping {
		t.Stop()
		delete(srv.sleeping, b)
	}
	srv.mu.Lock()
	srv.closing = true
	for c := range srv.conns {
		c.Close()
	}
	srv.mu.Unlock()
	srv.ln.Close()

	done := make(chan struct{})
	go func() {
		srv.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(shutdownWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		srv.log.Warn("connection goroutines still running at exit")
	}
}
