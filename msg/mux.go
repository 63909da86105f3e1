package msg

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Mux reads many Conns from one goroutine: one epoll set holds every
// channel for readability, Run takes what is ready in one pass and hands
// it over as one batch. At a thousand services a burst of pongs then
// costs one wake-up and one recvmsg each, not a goroutine wake-up and a
// second recvmsg (the one that says EAGAIN) each.
type Mux struct {
	ep    *os.File
	epRaw syscall.RawConn

	mu    sync.Mutex
	next  uint64
	conns map[uint64]*muxEntry

	// Pause: wake (an eventfd in the set, data 0) makes Run look at
	// pausing between two passes; resume ends its wait.
	wake    *os.File
	pausing func()
	resume  chan struct{}
	closed  chan struct{}
}

type muxEntry struct {
	c   *Conn
	key any
}

// Delivery is one packet, or the end of one channel, read by a Mux.
type Delivery struct {
	Key any // given to Add
	Msg Message
	// Files are owned by the receiver of the delivery, also when Err is
	// set (the fds that came with a malformed packet): the Mux never
	// closes a peer's fd, since a close can block.
	Files []*os.File
	// Err ends the channel's deliveries: io.EOF when the peer closed it,
	// a sentinel of this package for a malformed packet.
	Err error
	// At is when the peer sent it, by the kernel's stamp, if the Conn
	// has EnableTimestamps; else when it was read.
	At time.Time
}

// NewMux returns an empty Mux; Run reads it, Close ends it.
func NewMux() (*Mux, error) {
	ep, raw, err := newEpoll("mux-epoll")
	if err != nil {
		return nil, fmt.Errorf("mux: %w", err)
	}
	m := &Mux{ep: ep, epRaw: raw, conns: map[uint64]*muxEntry{}, closed: make(chan struct{})}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		ep.Close()
		return nil, fmt.Errorf("mux: eventfd: %w", err)
	}
	m.wake = os.NewFile(uintptr(efd), "mux-wake")
	var cerr error
	raw.Control(func(epfd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN} // data 0: no channel's token
		cerr = unix.EpollCtl(int(epfd), unix.EPOLL_CTL_ADD, efd, &ev)
	})
	if cerr != nil {
		ep.Close()
		m.wake.Close()
		return nil, fmt.Errorf("mux: %w", cerr)
	}
	return m, nil
}

// Pause makes Run stop reading once its pass is delivered: it calls
// paused on Run's goroutine after its last delivery, then waits for
// Resume (or Close). Every packet read before is delivered by then; the
// rest waits in the channels. It never blocks.
func (m *Mux) Pause(paused func()) {
	m.mu.Lock()
	m.pausing = paused
	m.mu.Unlock()
	var one [8]byte
	one[0] = 1 // any non-zero count; the native order does not matter
	unix.Write(int(m.wake.Fd()), one[:])
}

// Resume lets a paused Run read again; a Pause that Run has not come
// to yet is called off.
func (m *Mux) Resume() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pausing = nil
	if m.resume != nil {
		close(m.resume)
		m.resume = nil
	}
}

// paused runs a Pause asked for, between two passes; false once the
// Mux is closed.
func (m *Mux) paused() bool {
	m.mu.Lock()
	f := m.pausing
	if f == nil {
		m.mu.Unlock()
		return true
	}
	m.pausing = nil
	r := make(chan struct{})
	m.resume = r
	m.mu.Unlock()
	f()
	select {
	case <-r:
		return true
	case <-m.closed:
		return false
	}
}

// Add has Run read c, its deliveries carrying key, until c fails or is
// closed. A Conn is read by one Mux and never by Recv besides.
func (m *Mux) Add(c *Conn, key any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	if c.mux != nil || c.ep != nil {
		return errors.New("mux: channel is read already")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.next++
	token := m.next
	// The token, not the fd, names the entry: an fd number is reused as
	// soon as it is closed.
	if err := epollAdd(m.epRaw, c, token); err != nil {
		return fmt.Errorf("mux: %w", err)
	}
	m.conns[token] = &muxEntry{c: c, key: key}
	c.mux, c.token = m, token
	return nil
}

// remove takes c out of the set; no delivery for it follows.
func (m *Mux) remove(c *Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.conns[c.token]; !ok {
		return
	}
	delete(m.conns, c.token)
	m.epRaw.Control(func(epfd uintptr) {
		c.sockRaw.Control(func(fd uintptr) {
			unix.EpollCtl(int(epfd), unix.EPOLL_CTL_DEL, int(fd), nil)
		})
	})
}

// Run reads until Close, handing each pass's packets to deliver in the
// order read. The batch is reused once deliver returns. A delivery with
// Err set is the last for its key.
func (m *Mux) Run(deliver func([]Delivery)) {
	events := make([]unix.EpollEvent, 256)
	var ready []*muxEntry
	var batch []Delivery
	for {
		n := 0
		var werr error
		err := m.epRaw.Read(func(epfd uintptr) bool {
			for {
				n, werr = rawEpollPoll(int(epfd), events)
				if werr != unix.EINTR {
					return n > 0 || werr != nil
				}
			}
		})
		if err == nil {
			err = werr
		}
		if err != nil {
			return // closed
		}
		ready = ready[:0]
		m.mu.Lock()
		for i := range events[:n] {
			if epollData(&events[i]) == 0 {
				var b [8]byte
				unix.Read(int(m.wake.Fd()), b[:])
				continue
			}
			if e, ok := m.conns[epollData(&events[i])]; ok {
				ready = append(ready, e)
			}
		}
		m.mu.Unlock()
		// One packet per ready channel per pass: the set is
		// level-triggered, so a channel with more is ready again at the
		// next pass, and reading on until EAGAIN would cost a second
		// recvmsg for the usual single pong. A channel that floods gets
		// one packet per pass like every other.
		batch = batch[:0]
		for _, e := range ready {
			msg, files, sent, err := e.c.tryRecv()
			if err == ErrWouldBlock {
				continue
			}
			if sent.IsZero() {
				sent = time.Now()
			}
			batch = append(batch, Delivery{Key: e.key, Msg: msg, Files: files, Err: err, At: sent})
			if err != nil {
				m.remove(e.c)
			}
		}
		if len(batch) > 0 {
			deliver(batch)
			clear(batch)
		}
		if !m.paused() {
			return
		}
	}
}

// Close ends Run. The Conns stay open; their owners close them.
func (m *Mux) Close() error {
	m.mu.Lock()
	select {
	case <-m.closed:
	default:
		close(m.closed)
	}
	m.mu.Unlock()
	m.wake.Close()
	return m.ep.Close()
}
