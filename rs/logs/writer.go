package logs

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// What the goroutine owns: a sink per label with log = "file".

// stream is one pipe of a service: its read end and its held line.
type stream struct {
	sink  *sink
	fd    int // read end, non-blocking
	split splitter
	grown bool // its pipe was made floodPipe bytes
	eof   bool // every write end is closed: out of the epoll set
	// floodAt: when a read last found growAt bytes or more in it.
	floodAt time.Time
	// held: out of the epoll set while another service recovers (Yield).
	held bool
}

type sink struct {
	label      string
	cfg        Config
	outW, errW *os.File // the write ends: the instances' fds 1 and 2
	streams    [2]*stream
	stat       *Stat // under Writer.mu

	f    *os.File // the current file; nil: open at the next write
	size int64
	out  []byte // lines read and not yet written
	off  int    // of out, written already

	retryAt time.Time // failing: when the next try is

	zq   chan rotated // to its compressor; nil until the first
	zseq int
}

// readsPerWake bounds what one stream is read per wake-up, so that a
// flooding service does not starve the others.
const readsPerWake = 4

// readSize is one read's buffer, floodPipe the pipe size of a stream
// that filled it: a bigger pipe lets a flooding service write on while
// the goroutine writes its file, and wakes both less often. Its pages
// are only used while they hold output.
// A stream is grown to floodPipe once one read finds growAt bytes in it
// (half of a new pipe: it fills faster than this goroutine reads).
const (
	readSize  = 256 << 10
	floodPipe = 1 << 20
	growAt    = 32 << 10
)

// The Writer is busy (New's busy) once one read finds growAt bytes or
// it reads busyBytes within busyWindow (40 MB/s), and quiet after
// quietAfter without either.
const (
	busyBytes  = 4 << 20
	busyWindow = 100 * time.Millisecond
	quietAfter = time.Second
)

// writerNice is how much lower than rs's the priority of the
// goroutine's thread is: when the CPUs are short, a service's flood
// waits on its full pipe, and rs's loop and the services it is starting
// go first.
const writerNice = 10

func newSink(label string, cfg Config) (*sink, error) {
	s := &sink{label: label, cfg: cfg, stat: &Stat{}}
	for i, name := range []string{"out", "err"} {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			s.closePipes()
			return nil, fmt.Errorf("pipe: %w", err)
		}
		if err := unix.SetNonblock(p[0], true); err != nil {
			unix.Close(p[0])
			unix.Close(p[1])
			s.closePipes()
			return nil, fmt.Errorf("pipe: %w", err)
		}
		s.streams[i] = &stream{sink: s, fd: p[0], split: splitter{name: name}}
		f := os.NewFile(uintptr(p[1]), label+"."+name)
		if i == 0 {
			s.outW = f
		} else {
			s.errW = f
		}
	}
	return s, nil
}

func (s *sink) closePipes() {
	for i, st := range s.streams {
		if st != nil {
			unix.Close(st.fd)
			s.streams[i] = nil
		}
	}
	if s.outW != nil {
		s.outW.Close()
	}
	if s.errW != nil {
		s.errW.Close()
	}
}

// loop is the goroutine's own state.
type loop struct {
	w     *Writer
	sinks map[string]*sink
	// retired: sinks whose label has a sink of another mode now, read
	// until every instance that holds their pipes has let go (EOF).
	retired map[*sink]struct{}
	// failing: sinks (live or retired) whose last write failed, not
	// polled until a retry succeeds.
	failing map[*sink]struct{}
	byFD    map[int32]*stream
	buf     []byte
	ts      []byte
	// spare is the buffer of lines read: a sink holds one only while it
	// has lines not yet written, so a thousand quiet services do not each
	// keep the few hundred KiB a flood once needed.
	spare []byte
	// busy since a busyWindow read busyBytes, until quietAfter passes
	// without one (fullAt is the last); recent is read since windowAt.
	busy     bool
	fullAt   time.Time
	recent   int64
	windowAt time.Time
	// Yield: until yieldUntil, flooding streams of labels other than
	// those in recovering are out of the epoll set (held).
	yieldUntil time.Time
	recovering map[string]bool
	held       []*stream
	// frozen: an exec in place is coming (Writer.Freeze); no pipe is
	// read until Thaw.
	frozen bool
}

func (w *Writer) run() {
	// A thread of its own, at a lower priority (writerNice). Threads the
	// runtime starts while this one is locked are cloned from its
	// template thread, never from this one, so they keep rs's priority.
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// The main thread: the one ps shows as rs, and the runtime
		// never ends it. Go on on another, locked before this one is
		// let go.
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(locked)
			w.run()
		}()
		<-locked
		runtime.UnlockOSThread()
		return
	}
	if err := unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), writerNice); err != nil {
		w.log.Warn("logs: the writer's thread keeps rs's priority", "err", err)
	}
	defer close(w.done)
	l := &loop{w: w, sinks: map[string]*sink{}, retired: map[*sink]struct{}{}, failing: map[*sink]struct{}{}, byFD: map[int32]*stream{}, buf: make([]byte, readSize)}
	events := make([]unix.EpollEvent, 128)
	for {
		timeout := -1
		now := time.Now()
		if l.busy {
			timeout = max(int(l.fullAt.Add(quietAfter).Sub(now)/time.Millisecond)+1, 1)
		}
		for s := range l.failing {
			ms := max(int(s.retryAt.Sub(now)/time.Millisecond)+1, 1)
			if timeout < 0 || ms < timeout {
				timeout = ms
			}
		}
		if len(l.held) > 0 {
			ms := max(int(l.yieldUntil.Sub(now)/time.Millisecond)+1, 1)
			if timeout < 0 || ms < timeout {
				timeout = ms
			}
		}
		n, err := unix.EpollWait(w.epfd, events, timeout)
		if err != nil && !errors.Is(err, unix.EINTR) {
			w.log.Error("logs: epoll_wait failed; service output is no longer read", "err", err)
			return
		}
		closing := false
		for _, ev := range events[:max(n, 0)] {
			if ev.Fd == int32(w.wakefd) {
				closing = l.messages() || closing
				continue
			}
			if st := l.byFD[ev.Fd]; st != nil && !l.isFailing(st.sink) {
				l.read(st, readsPerWake)
				l.write(st.sink)
			}
		}
		now = time.Now()
		if len(l.held) > 0 && !now.Before(l.yieldUntil) {
			l.release()
		}
		l.measure(now)
		for s := range l.failing {
			if !now.Before(s.retryAt) {
				l.retry(s)
			}
		}
		l.endRetired()
		if closing {
			for _, s := range l.sinks {
				l.drain(s)
				l.drop(s)
			}
			for s := range l.retired {
				l.drain(s)
				l.drop(s)
			}
			unix.Close(w.epfd)
			unix.Close(w.wakefd)
			return
		}
	}
}

// messages handles what the API queued; true on Close.
func (l *loop) messages() bool {
	var b [8]byte
	unix.Read(l.w.wakefd, b[:])
	l.w.mu.Lock()
	q := l.w.queue
	l.w.queue = nil
	l.w.mu.Unlock()
	closing := false
	for _, m := range q {
		s := l.sinks[m.label]
		switch m.kind {
		case mAdd:
			l.sinks[m.label] = m.sink
			l.poll(m.sink, true)
		case mConfig:
			if s != nil {
				s.cfg = m.cfg
			}
		case mRetire:
			if s != nil {
				l.retire(s)
			}
		case mRemove:
			if s != nil {
				l.drain(s)
				l.drop(s)
			}
		case mEnded:
			if s != nil {
				l.drain(s)
			}
		case mReopen:
			for _, s := range l.sinks {
				s.closeFile()
			}
			for s := range l.retired {
				s.closeFile()
			}
		case mYield:
			l.yield(m.label, m.until)
		case mRecovered:
			delete(l.recovering, m.label)
			if len(l.recovering) == 0 {
				l.release()
			}
		case mClose:
			closing = true
		case mFreeze:
			l.freeze(m.frozen)
		case mThaw:
			l.thaw()
		}
	}
	return closing
}

// poll adds s's pipes to the epoll set, or takes them out.
func (l *loop) poll(s *sink, on bool) {
	for _, st := range s.streams {
		if on && st.eof {
			continue
		}
		if on {
			ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(st.fd)}
			if err := unix.EpollCtl(l.w.epfd, unix.EPOLL_CTL_ADD, st.fd, &ev); err != nil {
				l.w.log.Error("logs: epoll_ctl add", "label", s.label, "err", err)
			}
			l.byFD[int32(st.fd)] = st
		} else {
			unix.EpollCtl(l.w.epfd, unix.EPOLL_CTL_DEL, st.fd, nil)
			delete(l.byFD, int32(st.fd))
		}
	}
}

// read reads st at most n times, up to what the pipe holds, into its
// sink's pending lines.
func (l *loop) read(st *stream, n int) {
	s := st.sink
	stamped := false
	for i := 0; i < n; i++ {
		k, err := readNonblock(st.fd, l.buf)
		if errors.Is(err, unix.EINTR) {
			i--
			continue
		}
		if k == 0 {
			l.ended(st)
			return
		}
		if k < 0 {
			return
		}
		if !stamped {
			l.ts = stamp(l.ts, time.Now())
			stamped = true
		}
		if s.out == nil {
			s.out, l.spare = l.spare, nil
		}
		s.out = st.split.feed(s.out, l.ts, l.buf[:k])
		l.recent += int64(k)
		if k >= growAt {
			l.flooding(st)
		}
		if k < len(l.buf) {
			return
		}
	}
}

// flooding: a read found growAt bytes or more in st: the Writer is busy
// at once, and st's pipe grows.
func (l *loop) flooding(st *stream) {
	l.fullAt = time.Now()
	st.floodAt = l.fullAt
	if !l.busy {
		l.busy = true
		l.w.setBusy(true)
	}
	if !st.grown {
		st.grown = true
		unix.FcntlInt(uintptr(st.fd), unix.F_SETPIPE_SZ, floodPipe)
	}
}

// measure turns busy when the last window (busyWindow or longer) read
// at busyBytes per busyWindow or more,
// and quiet once quietAfter passes without such a window.
func (l *loop) measure(now time.Time) {
	if d := now.Sub(l.windowAt); d >= busyWindow {
		if l.recent >= int64(float64(busyBytes)*float64(d)/float64(busyWindow)) {
			l.fullAt = now
			if !l.busy {
				l.busy = true
				l.w.setBusy(true)
			}
		}
		l.recent, l.windowAt = 0, now
	}
	if l.busy && now.Sub(l.fullAt) >= quietAfter {
		l.busy = false
		l.w.setBusy(false)
	}
}

// readNonblock reads a non-blocking pipe without telling the scheduler:
// it cannot block, and a read the runtime saw as a syscall would hand
// this thread's P to another thread when it takes over 20 µs (a full
// 256 KiB read does), a wake-up of a thread for nothing.
func readNonblock(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// retire: s's label has a sink of another mode now. rs's write ends
// close, and s is read on until the instances that still hold its pipes
// have gone (ended), so that what they write on their way out is kept.
func (l *loop) retire(s *sink) {
	delete(l.sinks, s.label)
	l.retired[s] = struct{}{}
	if s.outW != nil {
		s.outW.Close()
		s.outW = nil
	}
	if s.errW != nil {
		s.errW.Close()
		s.errW = nil
	}
	for _, st := range s.streams {
		l.read(st, readsPerWake)
	}
	l.write(s)
	l.endRetired()
}

// ended: every write end of st's pipe is closed: it leaves the epoll
// set (endRetired then drops a retired sink whose streams both ended).
func (l *loop) ended(st *stream) {
	if st.eof {
		return
	}
	st.eof = true
	unix.EpollCtl(l.w.epfd, unix.EPOLL_CTL_DEL, st.fd, nil)
	delete(l.byFD, int32(st.fd))
}

// endRetired writes out and drops the retired sinks nobody writes to
// any more.
func (l *loop) endRetired() {
	for s := range l.retired {
		if s.streams[0].eof && s.streams[1].eof {
			l.drain(s)
			l.drop(s)
		}
	}
}

// drain writes out what s's pipes hold now, and the lines held without
// their newline: an instance ended, or the sink goes.
func (l *loop) drain(s *sink) {
	if l.isFailing(s) {
		return // nowhere to write: the pipes keep it
	}
	for _, st := range s.streams {
		l.read(st, 1<<10)
	}
	l.ts = stamp(l.ts, time.Now())
	for _, st := range s.streams {
		s.out = st.split.flush(s.out, l.ts)
	}
	l.write(s)
}

// drop closes s's file and pipes and forgets it.
func (l *loop) drop(s *sink) {
	if !l.isFailing(s) {
		l.poll(s, false)
	}
	s.closeFile()
	s.closePipes()
	if s.zq != nil {
		close(s.zq)
	}
	if len(s.out) > s.off {
		l.w.log.Warn("log lines lost: the log file could not be written when the service went", "label", s.label, "bytes", len(s.out)-s.off)
	}
	if l.sinks[s.label] == s {
		delete(l.sinks, s.label)
	}
	delete(l.retired, s)
	delete(l.failing, s)
}

// isFailing: s's last write failed.
func (l *loop) isFailing(s *sink) bool {
	_, ok := l.failing[s]
	return ok
}

// closeFile closes s's current file: the next write opens it again.
func (s *sink) closeFile() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

// write writes s's pending lines; a failure stops reading s until a
// retry succeeds.
func (l *loop) write(s *sink) {
	if l.isFailing(s) {
		return
	}
	if err := l.flush(s); err != nil {
		l.failing[s] = struct{}{}
		s.retryAt = time.Now().Add(RetryEvery)
		l.poll(s, false)
		l.w.setStat(s, func(st *Stat) { st.Err = err.Error() })
		l.w.log.Warn("log writing fails: the service's output waits in its pipe", "label", s.label, "err", err)
	}
}

func (l *loop) retry(s *sink) {
	if err := l.flush(s); err != nil {
		s.retryAt = time.Now().Add(RetryEvery)
		l.w.setStat(s, func(st *Stat) { st.Err = err.Error() })
		return
	}
	delete(l.failing, s)
	l.poll(s, true)
	l.w.setStat(s, func(st *Stat) { st.Err = "" })
	l.w.log.Info("log writing resumed", "label", s.label)
}

// flush writes s.out from s.off, rotating at line ends before the file
// would pass MaxSize.
func (l *loop) flush(s *sink) error {
	defer func() {
		if s.off == len(s.out) {
			if cap(s.out) > cap(l.spare) {
				l.spare = s.out[:0]
			}
			s.out, s.off = nil, 0
		}
	}()
	for s.off < len(s.out) {
		if s.f == nil {
			if err := l.open(s); err != nil {
				return err
			}
		}
		seg := s.out[s.off:]
		if limit := int64(s.cfg.MaxSize); s.size+int64(len(seg)) > limit {
			cut := -1
			if room := limit - s.size; room > 0 {
				cut = bytes.LastIndexByte(seg[:room], '\n')
			}
			switch {
			case cut >= 0:
				seg = seg[:cut+1]
			case s.size > 0 && l.rotate(s):
				continue
			case s.size == 0:
				// A line longer than the whole file: alone in one.
				seg = seg[:bytes.IndexByte(seg, '\n')+1]
			}
		}
		n, err := s.f.Write(seg)
		s.off += n
		s.size += int64(n)
		if err != nil {
			if u := errors.Unwrap(err); u != nil {
				err = u
			}
			return fmt.Errorf("write %s: %w", s.f.Name(), err)
		}
	}
	return nil
}

func (l *loop) open(s *sink) error {
	if err := os.MkdirAll(l.w.dir, 0o750); err != nil {
		return fmt.Errorf("log directory: %w", err)
	}
	f, err := os.OpenFile(l.w.Path(s.label), os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o640)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	s.f, s.size = f, fi.Size()
	return nil
}

// rotate moves <label>.log to .log.1 (the older ones up, the last
// beyond Keep removed); false if it cannot now (the rename failed, or
// the compressor has a full queue): the file grows on. With Compress the
// file goes to <label>.log.rotated-N and the sink's compressor gzips it,
// shifts the older ones and names it .log.1.gz, in rotation order.
func (l *loop) rotate(s *sink) bool {
	base := l.w.Path(s.label)
	if s.cfg.Compress {
		if s.zq == nil {
			s.zq = make(chan rotated, 16)
			l.w.compress.Add(1)
			go l.w.compressor(s.label, base, s.zq)
		}
		if len(s.zq) == cap(s.zq) {
			return false
		}
		tmp := fmt.Sprintf("%s.rotated-%d", base, s.zseq)
		if err := os.Rename(base, tmp); err != nil {
			l.w.log.Warn("log rotation failed; the file grows on", "label", s.label, "err", err)
			return false
		}
		s.zseq++
		s.zq <- rotated{tmp, s.cfg.Keep}
	} else {
		shift(base, s.cfg.Keep)
		if err := os.Rename(base, base+".1"); err != nil {
			l.w.log.Warn("log rotation failed; the file grows on", "label", s.label, "err", err)
			return false
		}
	}
	s.f.Close()
	s.f, s.size = nil, 0
	return true
}

// rotated is a file the compressor is to gzip in as <base>.1.gz.
type rotated struct {
	path string
	keep int
}

// shift makes room for base.1: base.i(.gz) becomes base.i+1(.gz), and
// what would pass keep is removed.
func shift(base string, keep int) {
	name := func(i int, gz string) string { return fmt.Sprintf("%s.%d%s", base, i, gz) }
	for _, gz := range []string{"", ".gz"} {
		os.Remove(name(keep, gz))
		for i := keep - 1; i >= 1; i-- {
			os.Rename(name(i, gz), name(i+1, gz))
		}
	}
}

// compressor gzips one sink's rotated files, in order, off the reading
// goroutine; it ends when q is closed.
func (w *Writer) compressor(label, base string, q <-chan rotated) {
	defer w.compress.Done()
	for r := range q {
		final := base + ".1.gz"
		err := gzipFile(r.path, r.path+".gz")
		if err == nil {
			shift(base, r.keep)
			err = os.Rename(r.path+".gz", final)
		}
		if err == nil {
			err = os.Remove(r.path)
		} else {
			// Keep it, uncompressed, as .1.
			shift(base, r.keep)
			os.Rename(r.path, base+".1")
			w.log.Warn("log compression failed; the rotated file stays uncompressed", "label", label, "path", base+".1", "err", err)
		}
	}
}

func gzipFile(path, dstPath string) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp := dstPath + ".tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o640)
	if err != nil {
		return err
	}
	zw := gzip.NewWriter(dst)
	_, err = io.Copy(zw, src)
	if err == nil {
		err = zw.Close()
	}
	if e := dst.Close(); err == nil {
		err = e
	}
	if err == nil {
		err = os.Rename(tmp, dstPath)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// yield holds every stream that flooded within quietAfter, of a label
// other than one recovering, out of the epoll set until until (or the
// last recovering label is recovered): its writer blocks on its full
// pipe, and leaves the CPU to label's new instance. Nothing is lost:
// what the pipe holds is read once it is released. label's own
// streams, if held, are released: its new instance writes into them.
func (l *loop) yield(label string, until time.Time) {
	if l.recovering == nil {
		l.recovering = map[string]bool{}
	}
	l.recovering[label] = true
	if until.After(l.yieldUntil) {
		l.yieldUntil = until
	}
	now := time.Now()
	kept := l.held[:0]
	for _, st := range l.held {
		if st.sink.label == label {
			l.unhold(st)
		} else {
			kept = append(kept, st)
		}
	}
	l.held = kept
	for _, st := range l.byFD {
		if st.held || st.eof || l.recovering[st.sink.label] || st.floodAt.IsZero() || now.Sub(st.floodAt) >= quietAfter {
			continue
		}
		if unix.EpollCtl(l.w.epfd, unix.EPOLL_CTL_DEL, st.fd, nil) == nil {
			st.held = true
			l.held = append(l.held, st)
		}
	}
}

// release puts every held stream back in the epoll set.
func (l *loop) release() {
	for _, st := range l.held {
		l.unhold(st)
	}
	l.held = l.held[:0]
	clear(l.recovering)
	l.yieldUntil = time.Time{}
}

// unhold puts st back in the epoll set, if it is still polled (not
// dropped or ended meanwhile).
func (l *loop) unhold(st *stream) {
	st.held = false
	if l.byFD[int32(st.fd)] != st || st.eof {
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(st.fd)}
	// EEXIST: its sink's writing failed and resumed meanwhile, which
	// polls it again.
	if err := unix.EpollCtl(l.w.epfd, unix.EPOLL_CTL_ADD, st.fd, &ev); err != nil && !errors.Is(err, unix.EEXIST) {
		l.w.log.Error("logs: epoll_ctl add", "label", st.sink.label, "err", err)
	}
}

// freeze writes out every line read so far (a line without its newline
// as a line of its own), takes every pipe out of the epoll set and hands
// the pipes of every sink to frozen: what they hold from now on waits in
// them for the next rs.
func (l *loop) freeze(frozen func(map[string]Held, error)) {
	if len(l.retired) > 0 {
		frozen(nil, errors.New("the output of a service whose log mode changed is still being read"))
		return
	}
	l.ts = stamp(l.ts, time.Now())
	held := map[string]Held{}
	for label, s := range l.sinks {
		for _, st := range s.streams {
			s.out = st.split.flush(s.out, l.ts)
		}
		l.write(s)
		if !l.isFailing(s) {
			l.poll(s, false)
		}
		s.closeFile()
		held[label] = Held{OutR: s.streams[0].fd, ErrR: s.streams[1].fd, OutW: fdOf(s.outW), ErrW: fdOf(s.errW)}
	}
	l.frozen = true
	frozen(held, nil)
}

func fdOf(f *os.File) int {
	if f == nil {
		return -1
	}
	return int(f.Fd())
}

// thaw reads the pipes again: the exec did not happen.
func (l *loop) thaw() {
	if !l.frozen {
		return
	}
	l.frozen = false
	for _, s := range l.sinks {
		if !l.isFailing(s) {
			l.poll(s, true)
		}
	}
}
