package main

import (
	"errors"
	"net"
	"strings"

	"github.com/reincarnation/rs/sef/handoff"
)

// batch is the requests one connection had buffered, handed to the main
// loop in one Post. The connection goroutine fills reqs, posts, and does
// not touch the batch again until the final reply arrives; in between it
// belongs to the main loop. That hand-over is what keeps replies in order
// without a lock.
type batch struct {
	reqs [][]string
	next int    // main loop: index of the next request to run
	out  []byte // main loop: replies so far

	// replies carries reply bytes back. A batch sends one final reply
	// plus one early reply per DEBUG FAULT, and the channel is made with
	// room for all of them, so the main loop never blocks on it even if
	// the connection has gone.
	replies chan reply
}

type reply struct {
	data []byte
	more bool          // not the last reply for this batch
	ack  chan struct{} // if set, closed once data has been written
}

const (
	// maxBatch bounds the requests in one batch, so one client with a
	// deep pipeline cannot hold the main loop for long.
	maxBatch = 1024
	// readSize is a connection's initial and usual read buffer. It grows
	// for large arguments and shrinks back afterwards.
	readSize = 16 << 10
	// maxKeptReply is the reply buffer a connection keeps for reuse;
	// larger ones (a big GET) are let go.
	maxKeptReply = 1 << 20
)

// serve is a connection goroutine: read, parse every complete request
// buffered, run them as one batch, write the replies, repeat.
func (srv *server) serve(c *handoff.Conn) {
	srv.serveFrom(c, make([]byte, 0, readSize), parser{})
}

// serveFrom serves c starting with bytes already read and a parser in the
// middle of a request: what a live update handed over.
func (srv *server) serveFrom(c *handoff.Conn, buf []byte, p parser) {
	defer srv.wg.Done()
	defer srv.untrack(c)
	if cap(buf) < readSize {
		// grow doubles a full buffer: it needs some room to start from.
		nb := make([]byte, len(buf), readSize)
		buf = nb[:copy(nb, buf)]
	}
	var (
		b    batch
		rerr error
	)
	for {
		reqs, used, perr := p.parse(buf, maxBatch)
		if used > 0 {
			buf = buf[:copy(buf, buf[used:])]
			buf = shrink(buf)
		}
		if len(reqs) > 0 && !srv.roundTrip(c, &b, reqs) {
			return
		}
		if perr != nil {
			c.Write(appendError(nil, "ERR "+perr.Error()))
			return
		}
		if len(reqs) == maxBatch {
			continue // more complete requests may be buffered already
		}
		// A read error (usually EOF) ends the connection only now, after
		// everything that arrived with it has been served.
		if rerr != nil {
			return
		}
		if c.Parking() {
			// A live update is being prepared: the safe point is here,
			// before reading.
			if !c.Park(buf, parkState(&p)) {
				return
			}
			continue
		}
		buf = grow(buf, p.need)
		var n int
		n, rerr = c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(rerr, handoff.ErrInterrupted) {
			rerr = nil // the hand-off's wake-up: to the safe point
		}
	}
}

// roundTrip posts reqs to the main loop and writes the replies as they
// come back. It reports false when the connection should end.
func (srv *server) roundTrip(c net.Conn, b *batch, reqs [][]string) bool {
	b.reqs, b.next = reqs, 0
	b.out = b.out[:0]
	if n := 1 + countDebug(reqs); cap(b.replies) < n {
		b.replies = make(chan reply, n)
	}
	if srv.svc.Post(srv.ctx, b) != nil {
		return false // stopping
	}
	for {
		select {
		case r := <-b.replies:
			_, err := c.Write(r.data)
			if r.ack != nil {
				close(r.ack)
			}
			if err != nil {
				return false
			}
			if !r.more {
				b.reqs = nil
				if cap(r.data) <= maxKeptReply {
					b.out = r.data
				} else {
					b.out = nil
				}
				return true
			}
		case <-srv.quit:
			return false
		}
	}
}

func countDebug(reqs [][]string) int {
	n := 0
	for _, r := range reqs {
		if strings.EqualFold(r[0], "debug") {
			n++
		}
	}
	return n
}

// grow makes room to read into. A full buffer doubles, with the last step
// cut to exactly what the argument being read needs. It grows only as
// data arrives, so a header that announces 512 MiB and sends nothing
// costs nothing.
func grow(buf []byte, need int) []byte {
	if len(buf) < cap(buf) {
		return buf
	}
	size := 2 * cap(buf)
	if need > cap(buf) && need < size {
		size = need
	}
	nb := make([]byte, len(buf), size)
	copy(nb, buf)
	return nb
}

// shrink lets go of a buffer that grew for a large argument once the
// data left in it fits the usual size again.
func shrink(buf []byte) []byte {
	if cap(buf) <= 4*readSize || len(buf) > readSize/2 {
		return buf
	}
	nb := make([]byte, len(buf), readSize)
	copy(nb, buf)
	return nb
}
