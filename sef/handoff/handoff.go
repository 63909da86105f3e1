package handoff

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reincarnation/rs/sef"
)

// Mode says where a Group's connections park.
type Mode int

const (
	// Checkpoints: the service's goroutine calls Conn.Park at its safe
	// point; an interrupted Read returns ErrInterrupted.
	Checkpoints Mode = iota
	// IdleReads: a Conn marked idle parks inside Read.
	IdleReads
)

// ErrInterrupted is what a Checkpoints Conn's Read returns when an update
// wakes it: go to the safe point (Park), then read on.
var ErrInterrupted = errors.New("read interrupted by a live update")

// wakeAt is the deadline that wakes a blocked read or accept at once.
var wakeAt = time.Unix(1, 0)

// Group tracks a service's listeners and connections for live updates.
// Its methods are safe from any goroutine; Begin, End and AppendState
// belong to the main loop (sef's callbacks).
type Group struct {
	mode    Mode
	reached func()

	cur  atomic.Pointer[round] // the update being prepared, for the fast path
	done chan struct{}         // closed by Close

	mu        sync.Mutex
	round     *round
	conns     map[*Conn]struct{}
	listeners map[*Listener]struct{}
	closed    bool
	hold      <-chan struct{} // HoldUntil's: nothing read or accepted before it closes
}

// round is one update's preparation.
type round struct {
	resume    chan struct{} // closed when it ends
	parked    map[*Conn]parked
	lnsParked map[*Listener]struct{}
}

type parked struct {
	unread, state []byte
}

// New returns a Group whose connections park as mode says. reached is
// called when everything has parked (pass the service's Reached); nil
// is allowed.
func New(mode Mode, reached func()) *Group {
	return &Group{
		mode:      mode,
		reached:   reached,
		done:      make(chan struct{}),
		conns:     map[*Conn]struct{}{},
		listeners: map[*Listener]struct{}{},
	}
}

// Callbacks returns cb with the Group wired in: LUStateChanged begins
// and ends the parking (then calls cb's own), LUPrepare is Ready and
// cb's own. LUStateSave stays the service's: it calls AppendState.
func (g *Group) Callbacks(cb sef.Callbacks) sef.Callbacks {
	changed, prepare := cb.LUStateChanged, cb.LUPrepare
	cb.LUStateChanged = func(s *sef.Service, old, state int) {
		if old == 0 {
			g.Begin()
		} else if state == 0 {
			g.End()
		}
		if changed != nil {
			changed(s, old, state)
		}
	}
	cb.LUPrepare = func(s *sef.Service, state int) bool {
		return g.Ready() && (prepare == nil || prepare(s, state))
	}
	return cb
}

// Begin asks every listener and connection to park.
func (g *Group) Begin() {
	g.mu.Lock()
	if g.round != nil || g.closed {
		g.mu.Unlock()
		return
	}
	r := &round{resume: make(chan struct{}), parked: map[*Conn]parked{}, lnsParked: map[*Listener]struct{}{}}
	g.round = r
	g.cur.Store(r)
	conns := g.snapshot()
	lns := make([]*Listener, 0, len(g.listeners))
	for l := range g.listeners {
		lns = append(lns, l)
	}
	g.mu.Unlock()
	for _, l := range lns {
		l.setDeadline(wakeAt)
	}
	for _, c := range conns {
		c.wake()
	}
}

// End resumes everyone parked: the update was rolled back.
func (g *Group) End() {
	g.mu.Lock()
	r := g.round
	if r == nil {
		g.mu.Unlock()
		return
	}
	g.round = nil
	g.cur.Store(nil)
	close(r.resume)
	conns := g.snapshot()
	lns := make([]*Listener, 0, len(g.listeners))
	for l := range g.listeners {
		lns = append(lns, l)
	}
	g.mu.Unlock()
	for _, l := range lns {
		l.setDeadline(time.Time{})
	}
	for _, c := range conns {
		c.restoreDeadline()
	}
}

func (g *Group) snapshot() []*Conn {
	conns := make([]*Conn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	return conns
}

// Ready tells whether an update is being prepared and every listener and
// connection has parked.
func (g *Group) Ready() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.readyLocked()
}

func (g *Group) readyLocked() bool {
	r := g.round
	return r != nil && len(r.parked) == len(g.conns) && len(r.lnsParked) == len(g.listeners)
}

// leave takes a connection or listener out of the group (forget, under
// g.mu, reports whether it was tracked): one that goes while the others
// wait parked may be what completes the round.
func (g *Group) leave(forget func(g *Group) bool) {
	g.mu.Lock()
	ready := forget(g) && g.readyLocked()
	g.mu.Unlock()
	g.changed(ready)
}

// changed is called after something parked or left: it tells sef when
// that made the state reached.
func (g *Group) changed(ready bool) {
	if ready && g.reached != nil {
		g.reached()
	}
}

// Close wakes every parked goroutine for good (Park returns false, Read
// io.EOF, Accept net.ErrClosed): the service is stopping. It closes
// nothing.
func (g *Group) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.closed = true
		close(g.done)
	}
}

// Conns is how many connections the Group tracks.
func (g *Group) Conns() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// track makes a Conn of c; nil when the Group is closed (c is closed).
func (g *Group) track(c net.Conn, unread []byte) *Conn {
	hc := &Conn{Conn: c, g: g, unread: unread, idle: g.mode == IdleReads, gone: make(chan struct{})}
	g.mu.Lock()
	hc.gate = g.hold
	if g.closed {
		g.mu.Unlock()
		c.Close()
		return nil
	}
	g.conns[hc] = struct{}{}
	g.mu.Unlock()
	return hc
}

// Adopt tracks a connection the old instance handed over (Decode's),
// whose reader starts with unread. It returns nil, and closes c, when the
// Group is closed.
func (g *Group) Adopt(c net.Conn, unread []byte) *Conn { return g.track(c, unread) }

// park records what a goroutine holds and waits for the round to end:
// true when it did (carry on), false when the Group closed.
func (g *Group) park(r *round, c *Conn, l *Listener, p parked) bool {
	g.mu.Lock()
	if g.round != r || g.closed {
		closed := g.closed
		g.mu.Unlock()
		return !closed
	}
	if c != nil {
		r.parked[c] = p
	} else {
		r.lnsParked[l] = struct{}{}
	}
	ready := g.readyLocked()
	g.mu.Unlock()
	g.changed(ready)
	select {
	case <-r.resume:
		return true
	case <-g.done:
		return false
	}
}

// Conn is a connection a Group tracks. Close it to untrack it.
type Conn struct {
	net.Conn
	g *Group

	unread []byte // handed-over bytes Read returns first (the reader's)

	gate <-chan struct{} // HoldUntil's, when tracked; nil: none
	gone chan struct{}   // closed by Close

	mu       sync.Mutex
	idle     bool      // IdleReads: a Read may park
	userRead time.Time // the owner's read deadline
	closed   bool
}

// Park is a Checkpoints connection's safe point: if an update is being
// prepared, it parks with what the goroutine holds (bytes read and not
// yet used, the protocol's state; both go to the new instance) until the
// update ends. True: carry on (read on); false: the service is stopping,
// return. Outside an update it returns true at once.
func (c *Conn) Park(unread, state []byte) bool {
	r := c.g.cur.Load()
	if r == nil {
		select {
		case <-c.g.done:
			return false
		default:
			return true
		}
	}
	return c.g.park(r, c, nil, parked{unread: unread, state: state})
}

// SetIdle marks an IdleReads connection at a safe point: its reader holds
// no bytes of a request, so a Read may park until the byte that starts the
// next request arrives. Read marks it busy again when it returns data.
func (c *Conn) SetIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.idle = true
	if c.g.cur.Load() != nil {
		c.Conn.SetReadDeadline(wakeAt)
	}
}

func (c *Conn) isIdle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.idle
}

func (c *Conn) busy() {
	c.mu.Lock()
	c.idle = false
	c.mu.Unlock()
}

// wake interrupts a blocked Read that may park.
func (c *Conn) wake() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.g.mode == Checkpoints || c.idle {
		c.Conn.SetReadDeadline(wakeAt)
	}
}

// restoreDeadline puts the owner's read deadline back, unless an update
// is (again) being prepared and this connection is to stay woken: Begin
// publishes the round before it wakes anyone, so under c.mu either its
// wake-up is still to come or the round is seen here.
func (c *Conn) restoreDeadline() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || (c.g.cur.Load() != nil && (c.g.mode == Checkpoints || c.idle)) {
		return
	}
	c.Conn.SetReadDeadline(c.userRead)
}

// ours tells whether a deadline error came from a wake, not from the
// owner's deadline.
func (c *Conn) ours() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.userRead.IsZero() || time.Now().Before(c.userRead)
}

// Read reads, starting with the bytes an old instance handed over. In
// Checkpoints mode an update's wake-up returns ErrInterrupted; in
// IdleReads mode an idle connection parks here during an update.
func (c *Conn) Read(p []byte) (int, error) {
	if err := c.g.waitHold(c.gate, c.gone); err != nil {
		return 0, err
	}
	if len(c.unread) > 0 {
		n := copy(p, c.unread)
		c.unread = c.unread[n:]
		c.busy()
		return n, nil
	}
	for {
		if c.g.mode == IdleReads {
			if r := c.g.cur.Load(); r != nil && c.isIdle() {
				if !c.g.park(r, c, nil, parked{}) {
					return 0, io.EOF
				}
				continue
			}
		}
		n, err := c.Conn.Read(p)
		if n > 0 && c.g.mode == IdleReads {
			c.busy()
		}
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && c.ours() {
			if n > 0 {
				return n, nil
			}
			if c.g.cur.Load() == nil || (c.g.mode == IdleReads && !c.isIdle()) {
				c.restoreDeadline() // the update is over, or a busy connection reads on
				continue
			}
			if c.g.mode == Checkpoints {
				return 0, ErrInterrupted
			}
			continue
		}
		return n, err
	}
}

// SetReadDeadline sets the owner's read deadline (an update's wake-up
// overrides it meanwhile, and restores it after).
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.userRead = t
	if c.g.cur.Load() != nil && (c.g.mode == Checkpoints || c.idle) {
		return nil // stays woken until the update ends
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline is SetReadDeadline and the write deadline.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

// Close closes the connection and stops tracking it.
func (c *Conn) Close() error {
	c.mu.Lock()
	if !c.closed {
		close(c.gone)
	}
	c.closed = true
	c.mu.Unlock()
	c.g.leave(func(g *Group) bool {
		_, tracked := g.conns[c]
		delete(g.conns, c)
		if g.round != nil {
			delete(g.round.parked, c)
		}
		return tracked
	})
	return c.Conn.Close()
}

// Listener is a listener a Group tracks: Accept parks during an update
// and returns *Conn.
type Listener struct {
	net.Listener
	g *Group

	mu     sync.Mutex
	inject []*Conn
	gone   chan struct{} // closed by Close
	closed bool
}

// deadliner is what both TCP and unix listeners offer.
type deadliner interface{ SetDeadline(time.Time) error }

// Listener tracks ln; its Accept returns tracked connections. The
// Group owns ln's deadline.
func (g *Group) Listener(ln net.Listener) *Listener {
	l := &Listener{Listener: ln, g: g, gone: make(chan struct{})}
	g.mu.Lock()
	g.listeners[l] = struct{}{}
	r := g.round
	g.mu.Unlock()
	if r != nil {
		l.setDeadline(wakeAt)
	}
	return l
}

func (l *Listener) setDeadline(t time.Time) {
	if d, ok := l.Listener.(deadliner); ok {
		d.SetDeadline(t)
	}
}

// Inject queues handed-over connections for Accept to return first,
// before any new one: how an IdleReads service (an http.Server, which
// only serves what its listener accepts) adopts them.
func (l *Listener) Inject(cs ...*Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range cs {
		if c != nil {
			l.inject = append(l.inject, c)
		}
	}
}

// Accept returns the next injected connection, else the next new one;
// during an update it parks first.
func (l *Listener) Accept() (net.Conn, error) {
	if err := l.g.waitHold(l.g.holdGate(), l.gone); err != nil {
		return nil, net.ErrClosed
	}
	for {
		l.mu.Lock()
		if len(l.inject) > 0 {
			c := l.inject[0]
			l.inject = l.inject[1:]
			l.mu.Unlock()
			return c, nil
		}
		l.mu.Unlock()
		if r := l.g.cur.Load(); r != nil {
			if !l.g.park(r, nil, l, parked{}) {
				return nil, net.ErrClosed
			}
			continue
		}
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue // a wake-up: park above, or the update is over
			}
			return nil, err
		}
		hc := l.g.track(c, nil)
		if hc == nil {
			return nil, net.ErrClosed
		}
		return hc, nil
	}
}

// Close closes the listener and stops tracking it.
func (l *Listener) Close() error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.gone)
	}
	l.mu.Unlock()
	l.g.leave(func(g *Group) bool {
		_, tracked := g.listeners[l]
		delete(g.listeners, l)
		if g.round != nil {
			delete(g.round.lnsParked, l)
		}
		return tracked
	})
	return l.Listener.Close()
}

// Parking tells a Checkpoints goroutine, cheaply, that an update is being
// prepared: time to call Park (with the state it would park with built
// only then).
func (c *Conn) Parking() bool { return c.g.cur.Load() != nil }
