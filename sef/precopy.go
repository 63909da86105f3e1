package sef

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/msg"
)

// Pre-copy: the old instance streams a base snapshot of its state into
// a pipe while it keeps serving, the new instance loads it meanwhile,
// and at the quiescent point only the delta goes through the memfd (see
// the package doc). This file is the stream: its framing, the writer
// goroutine in the old instance and the loader in the new one.

// BaseStep writes the next part of the base snapshot to w, on the main
// loop between work items; it returns done once the whole base is
// written. Keep a step short (well under a millisecond): work waits
// while it runs. w never blocks: sef queues what a step writes and calls
// the next step only once the queue has room. A step that writes nothing
// and is not done (it waits for a goroutine of its own, say) is asked
// again after the next wake-up: work, an event, or s.Reached.
type BaseStep func(w io.Writer) (done bool, err error)

// The base stream's framing. The other instance is hostile: every size
// is bounded and anything else is an error, never a panic.
//
//	"sefbase" version(1 byte, baseVersion)
//	frame*: length (uint32 big-endian, 1..maxBaseFrame) payload
//	end:    0 (uint32), total payload bytes (uint64 big-endian)
//
// A stream that ends (EOF) before its first byte carries no base: the
// old instance had no LUBaseStart and closed its end.
const (
	baseMagic    = "sefbase"
	baseVersion  = 1
	maxBaseFrame = 1 << 20
	// baseFrame is the size a frame is sent at; baseQueue bounds what the
	// old instance's steps may queue before the next step waits for the
	// writer (a step may overshoot it by its own size).
	baseFrame = 256 << 10
	baseQueue = 4 << 20
)

// baseSend is the old instance's side: the step, the queue of frames
// and the goroutine that writes them, so the main loop never blocks on
// the pipe.
type baseSend struct {
	step        BaseStep
	f           *os.File
	cur         []byte // the frame being filled: 4 bytes of length, then payload (main loop only)
	sent        uint64 // payload bytes queued (main loop only)
	stepDone    bool   // the last step said done (main loop only)
	longestStep time.Duration

	mu       sync.Mutex
	cond     *sync.Cond
	queue    [][]byte
	queued   int  // bytes queued and not yet written
	closed   bool // nothing more will be queued
	aborted  bool
	result   chan error    // the writer's end: nil once every byte is in the pipe
	free     chan []byte   // frames written, for reuse
	last     time.Time     // when the last step ended (main loop only)
	lastStep time.Duration // how long it took
}

func newBaseSend(s *Service, f *os.File, step BaseStep) *baseSend {
	b := &baseSend{step: step, f: f, result: make(chan error, 1), free: make(chan []byte, baseQueue/baseFrame+2)}
	b.cond = sync.NewCond(&b.mu)
	b.cur = b.frame()
	b.push(append([]byte(baseMagic), baseVersion))
	go b.run(s.Reached)
	return b
}

// Write is the step's io.Writer: it fills frames and queues them. A
// frame is filled to baseFrame exactly, never past its capacity: one
// that grew would be a copy and a new allocation, and could not be
// reused (frame). Filled to the frame limit instead, every frame of a
// million keys' base was allocated twice and copied once more, and the
// old instance collected garbage while it served.
func (b *baseSend) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(baseFrame-(len(b.cur)-4), len(p))
		b.cur = append(b.cur, p[:k]...)
		p = p[k:]
		if len(b.cur)-4 >= baseFrame {
			b.flushFrame()
		}
	}
	b.sent += uint64(n)
	return n, nil
}

func (b *baseSend) flushFrame() {
	if len(b.cur) == 4 {
		return
	}
	binary.BigEndian.PutUint32(b.cur, uint32(len(b.cur)-4))
	b.push(b.cur)
	b.cur = b.frame()
}

// frame returns an empty frame, one the writer is done with if there is
// one: the old instance serves while the base streams, and its garbage
// collector need not chase 30 MB of frames for a million keys.
func (b *baseSend) frame() []byte {
	select {
	case f := <-b.free:
		return append(f[:0], 0, 0, 0, 0)
	default:
		return append(make([]byte, 0, baseFrame+4), 0, 0, 0, 0)
	}
}

func (b *baseSend) push(c []byte) {
	b.mu.Lock()
	b.queue = append(b.queue, c)
	b.queued += len(c)
	b.mu.Unlock()
	b.cond.Signal()
}

func (b *baseSend) pending() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.queued
}

// finish queues the end of the stream; the writer closes the pipe after it.
func (b *baseSend) finish() {
	b.flushFrame()
	end := binary.BigEndian.AppendUint32(nil, 0)
	b.push(binary.BigEndian.AppendUint64(end, b.sent))
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cond.Signal()
}

// abort drops the stream: the writer stops, the pipe closes (the new
// instance, if it still reads, sees the base cut short).
func (b *baseSend) abort() {
	b.mu.Lock()
	b.closed, b.aborted = true, true
	b.queue, b.queued = nil, 0
	b.mu.Unlock()
	b.cond.Signal()
	b.f.Close() // wakes a Write blocked on a full pipe
}

// run is the writer goroutine; it ends once the stream is finished or
// aborted, after closing the pipe. poke wakes the main loop.
func (b *baseSend) run(poke func()) {
	var err error
	for {
		b.mu.Lock()
		for len(b.queue) == 0 && !b.closed {
			b.cond.Wait()
		}
		if len(b.queue) == 0 || b.aborted {
			b.mu.Unlock()
			break
		}
		c := b.queue[0]
		b.queue[0] = nil
		b.queue = b.queue[1:]
		b.mu.Unlock()
		if _, werr := b.f.Write(c); errors.Is(werr, syscall.EPIPE) {
			err = fmt.Errorf("the new instance closed the stream (%w)", werr)
		} else if werr != nil {
			err = fmt.Errorf("write: %w", werr)
		}
		if err != nil {
			break // the main loop learns it at once and gives up
		}
		b.mu.Lock()
		b.queued -= len(c)
		b.mu.Unlock()
		if cap(c) == baseFrame+4 {
			select {
			case b.free <- c:
			default:
			}
		}
		poke()
	}
	if err == nil {
		err = b.drain()
	}
	if cerr := b.f.Close(); err == nil && cerr != nil && !errors.Is(cerr, os.ErrClosed) {
		err = fmt.Errorf("close base: %w", cerr)
	}
	b.result <- err
	poke()
}

// drain waits until the new instance has read the pipe empty: what it
// has not read yet it must load in the pause, so the old instance heads
// for the state only once the pipe is empty (FIONREAD, TIOCINQ in
// x/sys, works on either end of a pipe). An abort closes the pipe and
// ends the wait.
func (b *baseSend) drain() error {
	rc, err := b.f.SyscallConn()
	if err != nil {
		return fmt.Errorf("drain base: %w", err)
	}
	for {
		n := 0
		var ierr error
		gone := false
		if err := rc.Control(func(fd uintptr) {
			if n, ierr = unix.IoctlGetInt(int(fd), unix.TIOCINQ); ierr != nil {
				return
			}
			// A pipe's write end polls POLLERR once no reader is left.
			p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			if _, err := unix.Poll(p, 0); err == nil && p[0].Revents&unix.POLLERR != 0 {
				gone = true
			}
		}); err != nil {
			return fmt.Errorf("drain base: %w", err)
		}
		switch {
		case ierr != nil:
			return fmt.Errorf("drain base: %w", ierr)
		case n == 0:
			return nil
		case gone:
			return errors.New("the new instance closed the stream before it read it all")
		}
		time.Sleep(drainPoll)
	}
}

// drainPoll is how often drain looks at the pipe.
const drainPoll = 200 * time.Microsecond

// While work is waiting, a base step runs only once the loop has spent
// baseWorkShare times the last step's length on work since it: requests
// go first, and the base still moves (a third of the loop) under a load
// that never lets the queue empty.
const baseWorkShare = 2

// baseTry drives the base on the main loop while preparing; more says
// that a step may run again at once (Receive must not block). Once the
// base is in the pipe it tells rs and lets preparing go on.
func (s *Service) baseTry() (more bool) {
	b := s.lu.base
	if !b.stepDone && len(b.result) > 0 {
		// The writer ended before the last step: it failed, and the
		// update with it, at once rather than after the whole base.
		s.baseFailed(fmt.Errorf("pre-copy base: %w", <-b.result))
		return false
	}
	if !b.stepDone {
		if b.pending() >= baseQueue {
			return false // the writer pokes when there is room
		}
		t0 := time.Now()
		if len(s.work) > 0 && t0.Sub(b.last) < baseWorkShare*b.lastStep {
			return true // work first; Receive comes back without waiting
		}
		before := b.sent
		done, err := b.step(b)
		b.last = time.Now()
		b.lastStep = b.last.Sub(t0)
		if b.lastStep > b.longestStep {
			b.longestStep = b.lastStep
		}
		if err != nil {
			s.baseFailed(fmt.Errorf("pre-copy base: %w", err))
			return false
		}
		if !done {
			// A step that wrote nothing waits for a wake-up (Reached).
			return b.sent != before
		}
		b.stepDone = true
		b.finish()
	}
	select {
	case err := <-b.result:
		if err != nil {
			s.baseFailed(fmt.Errorf("pre-copy base: %w", err))
			return false
		}
	default:
		return false // the writer pokes when it is done
	}
	s.lu.base = nil
	s.lu.delta = true
	s.send(&msg.Message{Kind: msg.KindLUBaseDone, Base: b.sent})
	s.log.Info("pre-copy base streamed; preparing for the state", "state", s.lu.state, "bytes", b.sent, "longest_step", b.longestStep)
	if s.cb.LUStateChanged != nil {
		s.cb.LUStateChanged(s, 0, s.lu.state)
	}
	return false
}

func (s *Service) baseFailed(err error) {
	s.send(&msg.Message{Kind: msg.KindLUReady, Err: err.Error()})
	s.luEnd(err.Error())
}

// preload is the new instance's loading of the base, in a goroutine of
// its own while Startup waits for init.
type preload struct {
	f      *os.File
	done   chan struct{}
	loaded bool  // a whole base was read and loaded
	err    error // set before done is closed
	// gcPercent is the GC percent to restore after the init, once done
	// is closed; 0 if the load left it alone.
	gcPercent int
	restored  chan struct{} // closed once restoreGC has put it back
}

// startPreload runs LUBaseLoad on the base's read end f (ours).
func (s *Service) startPreload(f *os.File) (*preload, error) {
	nb, err := nonblocking(f)
	if err != nil {
		return nil, fmt.Errorf("pre-copy base: %w", err)
	}
	p := &preload{f: nb, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer nb.Close()
		// The old instance serves while this loads: the load takes one
		// CPU at most, so the old one keeps the others. (Not a lower
		// priority: the end of the load falls in the pause, and a
		// thread's priority cannot be raised again without privilege.)
		// The CPUs come back from a goroutine of their own: GOMAXPROCS
		// waits for a garbage collection under way to end, tens of
		// milliseconds after a large load, and the init must not.
		prev := runtime.GOMAXPROCS(1)
		defer func() { go runtime.GOMAXPROCS(prev) }()
		p.gcPercent = raiseGCPercent(loadGCPercent)
		p.loaded, p.err = loadBase(s, bufio.NewReaderSize(nb, 64<<10))
	}()
	return p, nil
}

// loadGCPercent is the GC percent (GOGC) while the base loads. A load
// grows the heap from nothing to the whole state, and at the default of
// 100 the collector runs each time the heap doubles: at a million kv
// keys (gctrace, 2026-12-03), 10-11 collections during the load, the
// last 38-50 ms of marking, ending 10-200 ms before the pause. At 400
// the load sees 3, the last ending 47-66 ms before it, and the heap
// peaks at about 160 MB against 140. Back at 100 after the init, the
// goal is twice the live heap the last collection found, above the heap
// then, so the restore starts no collection either. Bench, 3 runs each
// way (BENCHMARKS.md, 2026-12-03): the pause after the base at 1M keys
// 3.4-4.1 ms against 5.3-6.2 ms under the saturating load, 2.8-3.1 ms
// against 4.2-5.7 ms paced.
const loadGCPercent = 400

// raiseGCPercent raises the GC percent to to and returns what it was, or
// 0 if it leaves it alone: already at to or above, collection off
// (GOGC=off, which the metric reads as the largest uint64), or 0 (the
// service asked for collections without a pause between them).
func raiseGCPercent(to int) int {
	sample := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	cur := sample[0].Value.Uint64()
	if cur == 0 || cur >= uint64(to) {
		return 0
	}
	debug.SetGCPercent(to)
	return int(cur)
}

// restoreGC puts back the GC percent the load raised, after the init:
// back at the load's end the collection it starts (the heap is then past
// the old goal) would mark the whole new state in the pause. A setting
// the service changed meanwhile stays.
//
// After the init, too, the heap may be near or past the goal the old
// percent gives, if no collection ran since the load grew it: at 100k kv
// keys the load ends at about 9 MB with no collection yet (the first
// comes at 16 MB at 400), and the goal at 100 is 4 MB. Put back then, the
// percent starts a collection at once, in the first milliseconds the new
// instance serves, while the requests that waited out the pause are
// answered. The old percent then comes back after the next collection
// instead, which runs at the load's percent when the heap reaches its
// goal, or when the runtime forces one (every two minutes at the
// latest); restored is closed once it is back.
func (p *preload) restoreGC() {
	p.restored = make(chan struct{})
	if p.gcPercent == 0 {
		close(p.restored)
		return
	}
	if !collectsSoon(p.gcPercent) {
		putBackGC(p.gcPercent)
		close(p.restored)
		return
	}
	// An object no one holds: its cleanup runs once a collection has
	// found it unreachable. (Not a tiny allocation, which the runtime
	// may share with others: it has a pointer.)
	runtime.AddCleanup(&struct{ p *int }{}, func(r gcRestore) {
		putBackGC(r.percent)
		close(r.done)
	}, gcRestore{p.gcPercent, p.restored})
}

type gcRestore struct {
	percent int
	done    chan struct{}
}

// putBackGC sets the GC percent to old unless the service changed it
// from loadGCPercent meanwhile.
func putBackGC(old int) {
	if now := debug.SetGCPercent(old); now != loadGCPercent {
		debug.SetGCPercent(now)
	}
}

// collectsSoon reports whether the heap is past half the way from the
// last collection's live heap to the goal GC percent old would set: the
// runtime starts a collection somewhere after that (earlier the larger
// the heap grew since).
func collectsSoon(old int) bool {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 || s[1].Value.Kind() != metrics.KindUint64 {
		return false
	}
	live, heap := s[0].Value.Uint64(), s[1].Value.Uint64()
	const heapMinimum = 4 << 20 // the runtime's goal at 100 before any collection
	goal := max(live+live*uint64(old)/100, heapMinimum*uint64(old)/100)
	return heap > live+(goal-live)/2
}

// wait waits for the preload; abandon closes the pipe first, so that a
// load blocked on it ends.
func (p *preload) wait(abandon <-chan struct{}) error {
	select {
	case <-p.done:
		return p.err
	case <-abandon:
		p.f.Close()
		<-p.done
		return errors.New("pre-copy base: abandoned")
	}
}

func loadBase(s *Service, r io.Reader) (loaded bool, err error) {
	var h [len(baseMagic) + 1]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil // no base: the old instance streamed none
		}
		return false, fmt.Errorf("pre-copy base: header: %w", err)
	}
	if string(h[:len(baseMagic)]) != baseMagic {
		return false, errors.New("pre-copy base: not a base stream")
	}
	if v := h[len(baseMagic)]; v != baseVersion {
		return false, fmt.Errorf("pre-copy base: stream version %d, this sef reads %d", v, baseVersion)
	}
	br := &baseReader{r: r}
	if err := s.cb.LUBaseLoad(s, br); err != nil {
		return false, fmt.Errorf("pre-copy base: load: %w", err)
	}
	if br.err != nil {
		return false, fmt.Errorf("pre-copy base: %w", br.err)
	}
	if !br.end {
		// The callback stopped early: the rest must be nothing.
		if n, err := br.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
			if err == nil || errors.Is(err, io.EOF) {
				err = errors.New("the load callback left part of the base unread")
			}
			return false, fmt.Errorf("pre-copy base: %w", err)
		}
	}
	// Nothing may follow the end: the old instance closes its end there.
	if n, err := r.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		if err == nil || errors.Is(err, io.EOF) {
			err = errors.New("bytes after its end")
		}
		return false, fmt.Errorf("pre-copy base: %w", err)
	}
	return true, nil
}

// baseReader reads the payload of a base stream: io.EOF at its end
// marker, an error for a stream cut short or malformed.
type baseReader struct {
	r     io.Reader
	left  int // payload left in the current frame
	total uint64
	end   bool
	err   error
	// The load is paced while the old instance streams (see pace).
	lastRet time.Time
	worked  time.Duration
}

// pace: before a read that will wait on the pipe (nothing buffered),
// the load sleeps as long as it worked since the last such read, so that
// while the old instance serves and streams, the load takes half a CPU
// at most and leaves the rest to the old instance and its clients. What
// is buffered is read at once: the load's tail, which falls in the pause
// once the old instance has seen the pipe read empty, is never paced.
func (b *baseReader) pace() {
	if b.lastRet.IsZero() {
		return
	}
	b.worked += time.Since(b.lastRet)
	buffered, ok := b.r.(interface{ Buffered() int })
	if b.worked > 2*time.Millisecond && ok && buffered.Buffered() == 0 {
		time.Sleep(b.worked)
		b.worked = 0
	}
}

var errBaseShort = errors.New("base stream cut short")

func (b *baseReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	b.pace()
	defer func() { b.lastRet = time.Now() }()
	for b.left == 0 {
		if b.end {
			return 0, io.EOF
		}
		var h [4]byte
		if _, err := io.ReadFull(b.r, h[:]); err != nil {
			return 0, b.fail(err)
		}
		n := binary.BigEndian.Uint32(h[:])
		if n == 0 {
			var t [8]byte
			if _, err := io.ReadFull(b.r, t[:]); err != nil {
				return 0, b.fail(err)
			}
			if got := binary.BigEndian.Uint64(t[:]); got != b.total {
				b.err = fmt.Errorf("base stream says %d bytes, %d came", got, b.total)
				return 0, b.err
			}
			b.end = true
			return 0, io.EOF
		}
		if n > maxBaseFrame {
			b.err = fmt.Errorf("base frame of %d bytes (at most %d)", n, maxBaseFrame)
			return 0, b.err
		}
		b.left = int(n)
	}
	if len(p) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= n
	b.total += uint64(n)
	if err != nil {
		return n, b.fail(err)
	}
	return n, nil
}

func (b *baseReader) fail(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = errBaseShort
	}
	b.err = err
	return err
}

// nonblocking makes a pipe end sef received (blocking, from SCM_RIGHTS)
// a file of the runtime's poller, so that closing it wakes a goroutine
// blocked on it. f is closed.
func nonblocking(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		derr = err
	}
	f.Close()
	if derr != nil {
		return nil, fmt.Errorf("dup: %w", derr)
	}
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return nil, fmt.Errorf("set non-blocking: %w", err)
	}
	return os.NewFile(uintptr(nfd), "lu-base"), nil
}
