package main

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/reincarnation/rs/internal/resp"
)

// The update scenario's clients: loadClients goroutines, each on one
// persistent connection, in a tight request-reply loop of INCR, SET and
// GET on keys of its own, checking every reply against what it expects.
// Each records when every request was sent and when its reply came, so
// that the longest wait inside an update's window can be found afterwards.

const (
	loadClients = 4
	// loadRequestTimeout bounds each request: a client never waits
	// longer than this for a reply, so stopping the load is bounded too.
	loadRequestTimeout = 10 * time.Second
	// maxLoadMsgs is how many problems each client keeps word for word.
	maxLoadMsgs = 3
	redialPause = time.Millisecond
)

// span is one request: sent at start, answered (or failed, !ok) at end,
// both offsets from load.base.
type span struct {
	start, end time.Duration
	ok         bool
}

// window is the time an update command was under way, as offsets from
// load.base.
// window is an update's: from the command to its reply; pause, when
// not 0, is when a pre-copy's base had streamed (its progress line
// came), the start of the pause proper.
type window struct{ start, end, pause time.Duration }

type load struct {
	base    time.Time
	stopped time.Duration // when stopAndWait was called, from base
	stop    chan struct{}
	wg      sync.WaitGroup
	clients []*loadClient
}

type loadClient struct {
	id               int
	network, address string
	spans            []span
	errs, wrong      int // network errors (and timeouts); replies not as expected
	redials          int
	gaveUp           bool
	// every, when not 0, paces the client: one request each every, on a
	// fixed schedule that does not catch up after a slow reply.
	every time.Duration
	msgs  []string // the first few problems, for the notes
}

// startLoad starts loadClients clients back to back; stopAndWait ends
// them.
func startLoad(addr string, base time.Time) *load { return startLoadN(addr, base, loadClients, 0) }

// startLoadN is startLoad with n clients, each sending one request every
// every (0: back to back).
func startLoadN(addr string, base time.Time, n int, every time.Duration) *load {
	network, address := resp.SplitAddr(addr)
	l := &load{base: base, stop: make(chan struct{})}
	for i := range n {
		lc := &loadClient{id: i, network: network, address: address, every: every}
		l.clients = append(l.clients, lc)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			lc.run(base, l.stop)
		}()
	}
	return l
}

// stopAndWait stops the clients and waits for them, at most
// loadRequestTimeout plus a margin; false if one did not end.
func (l *load) stopAndWait() bool {
	l.stopped = time.Since(l.base)
	close(l.stop)
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(loadRequestTimeout + 5*time.Second):
		return false
	}
}

// rate is the requests per second the clients made, once stopped.
func (l *load) rate() float64 {
	if l.stopped <= 0 {
		return 0
	}
	return float64(l.requests()) / l.stopped.Seconds()
}

// requests is how many requests the clients have made; only safe once
// they have stopped, or as a rough figure while they run (it races).
func (l *load) requests() int {
	n := 0
	for _, c := range l.clients {
		n += len(c.spans)
	}
	return n
}

// gap is the longest a client went without the reply it was waiting for,
// among the requests under way at some point of w, and how many requests
// that was. A request that failed (the connection broke) is not an
// answer: its wait runs on, through the redial, to the end of the next
// request that got a reply.
func (l *load) gap(w window) (time.Duration, int) {
	var longest time.Duration
	n := 0
	for _, c := range l.clients {
		// Spans of one client are in order and do not overlap.
		i, _ := slices.BinarySearchFunc(c.spans, w.start, func(s span, t time.Duration) int {
			if s.end < t {
				return -1
			}
			return 1
		})
		for i > 0 && !c.spans[i-1].ok { // a failing run that began before w
			i--
		}
		var from time.Duration
		failing := false
		for ; i < len(c.spans); i++ {
			s := c.spans[i]
			if !failing {
				if s.start > w.end {
					break
				}
				from = s.start
			}
			n++
			if !s.ok {
				failing = true
				continue
			}
			failing = false
			longest = max(longest, s.end-from)
		}
	}
	return longest, n
}

// outside returns the waits of every request that overlaps none of ws.
func (l *load) outside(ws []window) []time.Duration {
	ws = slices.Clone(ws)
	slices.SortFunc(ws, func(a, b window) int { return int(a.start - b.start) })
	var d []time.Duration
	for _, c := range l.clients {
		j := 0
		for _, s := range c.spans {
			for j < len(ws) && ws[j].end < s.start {
				j++
			}
			if j < len(ws) && ws[j].start <= s.end {
				continue // overlaps window j
			}
			d = append(d, s.end-s.start)
		}
	}
	return d
}

func (lc *loadClient) note(base time.Time, format string, args ...any) {
	if len(lc.msgs) < maxLoadMsgs {
		lc.msgs = append(lc.msgs, fmt.Sprintf("client %d at +%v: ", lc.id, time.Since(base).Round(time.Millisecond))+fmt.Sprintf(format, args...))
	}
}

func (lc *loadClient) dial() (*resp.Client, error) {
	return resp.Dial(lc.network, lc.address, time.Second)
}

// run is one client's loop, until stop is closed.
func (lc *loadClient) run(base time.Time, stop <-chan struct{}) {
	ctr := "bench:ctr:" + strconv.Itoa(lc.id)
	key := "bench:val:" + strconv.Itoa(lc.id)
	c, err := lc.dial()
	if err != nil {
		lc.errs++
		lc.gaveUp = true
		lc.note(base, "dial: %v", err)
		return
	}
	defer func() { c.Close() }()

	// do sends one command and returns its reply; a Go error means the
	// connection is in an unknown state.
	var next time.Time
	do := func(args ...string) (resp.Value, error) {
		if lc.every > 0 {
			now := time.Now()
			if next.Before(now) {
				next = now // late: no burst to catch up
			} else {
				select { // a long pace must not hold up stopAndWait
				case <-stop:
				case <-time.After(next.Sub(now)):
				}
			}
			next = next.Add(lc.every)
		}
		s := span{start: time.Since(base)}
		c.SetDeadline(time.Now().Add(loadRequestTimeout))
		v, err := c.Do(args...)
		s.end, s.ok = time.Since(base), err == nil
		lc.spans = append(lc.spans, s)
		return v, err
	}
	// redial replaces a broken connection and reads the counter back.
	// False: no working connection within 5 s (or told to stop). It
	// retries every redialPause, so that the gap it sees after a restart
	// (s6-svc -r) is the server's, not its own pause.
	var n int64
	redial := func(err error, what string) bool {
		lc.errs++
		lc.note(base, "%s: %v", what, err)
		c.Close()
		deadline := time.Now().Add(5 * time.Second)
		for {
			select {
			case <-stop:
				return false
			default:
			}
			lc.redials++
			nc, err := lc.dial()
			if err == nil {
				c = nc
				c.SetDeadline(time.Now().Add(loadRequestTimeout))
				var v resp.Value
				if v, err = c.Do("GET", ctr); err == nil && v.Kind == resp.KindBulk {
					n, _ = strconv.ParseInt(v.Str, 10, 64)
					return true
				}
				if err == nil {
					err = fmt.Errorf("GET %s: %v", ctr, v)
				}
				c.Close()
			}
			if time.Now().After(deadline) {
				lc.gaveUp = true
				lc.note(base, "no working connection within 5s: %v", err)
				return false
			}
			time.Sleep(redialPause)
		}
	}

	if v, err := do("SET", ctr, "0"); err != nil || v.Kind != resp.KindSimple || v.Str != "OK" {
		lc.errs++
		lc.gaveUp = true
		lc.note(base, "SET %s 0: %v %v", ctr, v, err)
		return
	}
	for {
		select {
		case <-stop:
			return
		default:
		}
		n++
		v, err := do("INCR", ctr)
		if err != nil {
			if !redial(err, "INCR") {
				return
			}
			continue
		}
		if v.Kind != resp.KindInt || v.Int != n {
			lc.wrong++
			lc.note(base, "INCR %s: got %v, want %d", ctr, v, n)
			if v.Kind == resp.KindInt {
				n = v.Int
			}
		}
		val := "v" + strconv.FormatInt(n, 10)
		v, err = do("SET", key, val)
		if err != nil {
			if !redial(err, "SET") {
				return
			}
			continue
		}
		if v.Kind != resp.KindSimple || v.Str != "OK" {
			lc.wrong++
			lc.note(base, "SET %s %s: got %v, want OK", key, val, v)
		}
		v, err = do("GET", key)
		if err != nil {
			if !redial(err, "GET") {
				return
			}
			continue
		}
		if v.Kind != resp.KindBulk || v.Null || v.Str != val {
			lc.wrong++
			lc.note(base, "GET %s: got %v, want %q", key, v, val)
		}
	}
}
