package logs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Modes of a service's output (config key `log`).
const (
	ModeFile    = "file"    // LOGDIR/<label>.log (the default)
	ModeInherit = "inherit" // rs's own stdout and stderr
	ModeNull    = "null"    // /dev/null
)

// Defaults of Config's zero fields.
const (
	DefaultMaxSize = 10 << 20
	DefaultKeep    = 5
)

// RetryEvery is how often a write that failed is tried again.
var RetryEvery = 500 * time.Millisecond

// ErrClosed: the Writer is closed.
var ErrClosed = errors.New("log writer closed")

// Config is how one service's output is kept. Zero fields mean defaults.
type Config struct {
	Mode     string // ModeFile, ModeInherit or ModeNull; "": ModeFile
	MaxSize  uint64 // bytes a file may reach before it is rotated
	Keep     int    // rotated files kept: <label>.log.1 to .log.<Keep>
	Compress bool   // gzip rotated files
}

func (c Config) withDefaults() Config {
	if c.Mode == "" {
		c.Mode = ModeFile
	}
	if c.MaxSize == 0 {
		c.MaxSize = DefaultMaxSize
	}
	if c.Keep <= 0 {
		c.Keep = DefaultKeep
	}
	return c
}

// Files are what a service's instances get as their fds 1 and 2. They
// belong to the Writer: the caller hands them to each instance it starts
// (the child gets copies) and never closes them.
type Files struct {
	Stdout, Stderr *os.File
}

// Dup returns copies of f's fds (close-on-exec), for one process start:
// the caller closes them once the process has its own. Of no files it
// returns no files.
func (f Files) Dup() (Files, error) {
	if f.Stdout == nil || f.Stderr == nil {
		return Files{}, nil
	}
	out, err := dupFile(f.Stdout)
	if err != nil {
		return Files{}, err
	}
	errF, err := dupFile(f.Stderr)
	if err != nil {
		out.Close()
		return Files{}, err
	}
	return Files{Stdout: out, Stderr: errF}, nil
}

// Close closes both files (Dup's copies; never the Writer's own).
func (f Files) Close() {
	if f.Stdout != nil {
		f.Stdout.Close()
		f.Stderr.Close()
	}
}

func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup %s: %w", f.Name(), err)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// Stat is how logging goes for one service.
type Stat struct {
	Err string // why writing fails now; "" when it works
}

// Writer owns every service's pipes and log files; see the package doc.
type Writer struct {
	dir string
	log *slog.Logger

	// rs's stdout and stderr, opened anew, and /dev/null.
	inherit Files
	null    Files

	epfd, wakefd int

	mu     sync.Mutex
	queue  []message
	files  map[string]*sinkFiles // by label
	closed bool

	busy func(bool) // New's; nil: nobody asks

	done      chan struct{}
	compress  sync.WaitGroup
	closeOnce sync.Once
}

// sinkFiles is what Add remembers of a label: its mode, its Files, and
// for ModeFile its Stat (updated by the goroutine under mu).
type sinkFiles struct {
	stat  *Stat
	mode  string
	files Files
}

type msgKind int

const (
	mAdd msgKind = iota
	mConfig
	mRemove
	mRetire
	mEnded
	mReopen
	mYield
	mRecovered
	mClose
	mFreeze
	mThaw
)

type message struct {
	kind  msgKind
	label string
	cfg   Config
	sink  *sink     // mAdd
	until time.Time // mYield
	// mFreeze
	frozen func(map[string]Held, error)
}

// New returns a Writer into dir (made when the first file is opened) and
// starts its goroutine. dir "" means no directory: log = "file" acts as
// log = "inherit". busy, if not nil, is called on the Writer's goroutine
// with true when a service's output floods (a read fills the Writer's
// buffer) and with false once none has for a second: rs gives the
// Writer a CPU of its own meanwhile.
func New(dir string, log *slog.Logger, busy func(bool)) (*Writer, error) {
	if log == nil {
		log = slog.Default()
	}
	w := &Writer{dir: dir, log: log, busy: busy, files: map[string]*sinkFiles{}, done: make(chan struct{})}
	var err error
	if w.null.Stdout, err = os.OpenFile(os.DevNull, os.O_WRONLY, 0); err != nil {
		return nil, fmt.Errorf("logs: %w", err)
	}
	w.null.Stderr = w.null.Stdout
	w.inherit.Stdout = reopenStd(1, "stdout", log)
	w.inherit.Stderr = reopenStd(2, "stderr", log)
	if w.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("logs: epoll_create1: %w", err)
	}
	if w.wakefd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		unix.Close(w.epfd)
		return nil, fmt.Errorf("logs: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(w.wakefd)}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, w.wakefd, &ev); err != nil {
		unix.Close(w.epfd)
		unix.Close(w.wakefd)
		return nil, fmt.Errorf("logs: epoll_ctl: %w", err)
	}
	go w.run()
	return w, nil
}

func (w *Writer) setBusy(b bool) {
	if w.busy != nil {
		w.busy(b)
	}
}

// reopenStd opens rs's fd n anew: a new open file description, whose
// flags (O_NONBLOCK) a service may change without changing rs's. Where
// that cannot be (a socket), a dup shares rs's, and that is logged.
func reopenStd(fd int, name string, log *slog.Logger) *os.File {
	path := fmt.Sprintf("/proc/self/fd/%d", fd)
	if f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0); err == nil {
		return f
	} else {
		log.Warn("log = inherit: cannot open rs's "+name+" anew; services with log = inherit share its flags with rs",
			"path", path, "err", err)
	}
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		log.Warn("log = inherit: cannot dup rs's "+name+"; services with log = inherit get /dev/null", "err", err)
		f, _ := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		return f
	}
	return os.NewFile(uintptr(nfd), name)
}

// Path is the log file of label.
func (w *Writer) Path(label string) string { return Path(w.dir, label) }

// Path is the log file of label in dir.
func Path(dir, label string) string { return filepath.Join(dir, label+".log") }

// Add sets how label's output is kept and returns the files its
// instances get. For a label already added in the same mode it only
// changes the rotation settings and returns the same files; in another
// mode the old pipes are retired: the Writer closes its write ends and
// reads them on, into the file, until every process that holds them
// (an instance still starting or stopping) has let go. Files the
// caller hands to a process starting off its goroutine must be its own
// dups (Dup): the Writer closes its own when it likes. It never waits
// on I/O. On an error
// (no fds left for the pipes) it returns /dev/null's files with it.
func (w *Writer) Add(label string, cfg Config) (Files, error) {
	cfg = cfg.withDefaults()
	if cfg.Mode == ModeFile && w.dir == "" {
		cfg.Mode = ModeInherit
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.null, ErrClosed
	}
	if old, ok := w.files[label]; ok {
		if old.mode == cfg.Mode {
			w.post(message{kind: mConfig, label: label, cfg: cfg})
			return old.files, nil
		}
		// Instances still starting or stopping may hold the old
		// mode's pipes: they are read until those let go.
		w.post(message{kind: mRetire, label: label})
		delete(w.files, label)
	}
	sf := &sinkFiles{mode: cfg.Mode}
	switch cfg.Mode {
	case ModeInherit:
		sf.files = w.inherit
	case ModeNull:
		sf.files = w.null
	case ModeFile:
		s, err := newSink(label, cfg)
		if err != nil {
			return w.null, fmt.Errorf("log of %s: %w", label, err)
		}
		sf.files, sf.stat = Files{Stdout: s.outW, Stderr: s.errW}, s.stat
		w.post(message{kind: mAdd, label: label, cfg: cfg, sink: s})
	default:
		return w.null, fmt.Errorf("log of %s: mode %q: want file, inherit or null", label, cfg.Mode)
	}
	w.files[label] = sf
	return sf.files, nil
}

// Held are the fds of one service's pipes (log = "file"), for a table
// that crosses an exec in place: read and write ends of stdout and
// stderr. The Writer still owns them.
type Held struct {
	OutR int `msgpack:"out_r"`
	OutW int `msgpack:"out_w"`
	ErrR int `msgpack:"err_r"`
	ErrW int `msgpack:"err_w"`
}

// Freeze readies the Writer for an exec in place: every line read so
// far is written, no pipe is read any more (the services' output waits
// in them) and frozen is called, on the Writer's goroutine, with the
// pipes of every service with log = "file". Thaw undoes it. It never
// waits.
func (w *Writer) Freeze(frozen func(map[string]Held, error)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		frozen(nil, ErrClosed)
		return
	}
	w.post(message{kind: mFreeze, frozen: frozen})
}

// Thaw reads the pipes again after a Freeze: the exec did not happen.
func (w *Writer) Thaw() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.post(message{kind: mThaw})
	}
}

// Adopt is Add (log = "file") of the pipes a previous image of rs held
// for label (Freeze): the Writer owns their fds from now on and reads
// on what the service writes, as if it had made them.
func (w *Writer) Adopt(label string, cfg Config, h Held) (Files, error) {
	cfg = cfg.withDefaults()
	if cfg.Mode != ModeFile || w.dir == "" {
		return Files{}, fmt.Errorf("log of %s: adopted pipes need log = file and a log directory", label)
	}
	for _, fd := range []int{h.OutR, h.OutW, h.ErrR, h.ErrW} {
		if fd < 0 {
			return Files{}, fmt.Errorf("log of %s: adopted pipe fd %d", label, fd)
		}
		unix.CloseOnExec(fd)
	}
	for _, fd := range []int{h.OutR, h.ErrR} {
		if err := unix.SetNonblock(fd, true); err != nil {
			return Files{}, fmt.Errorf("log of %s: %w", label, err)
		}
	}
	s := &sink{label: label, cfg: cfg, stat: &Stat{}}
	s.streams[0] = &stream{sink: s, fd: h.OutR, split: splitter{name: "out"}}
	s.streams[1] = &stream{sink: s, fd: h.ErrR, split: splitter{name: "err"}}
	s.outW = os.NewFile(uintptr(h.OutW), label+".out")
	s.errW = os.NewFile(uintptr(h.ErrW), label+".err")
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		s.closePipes()
		return w.null, ErrClosed
	}
	if _, ok := w.files[label]; ok {
		s.closePipes()
		return Files{}, fmt.Errorf("log of %s: added already", label)
	}
	sf := &sinkFiles{mode: ModeFile, files: Files{Stdout: s.outW, Stderr: s.errW}, stat: s.stat}
	w.files[label] = sf
	w.post(message{kind: mAdd, label: label, cfg: cfg, sink: s})
	return sf.files, nil
}

// Remove forgets label: what its pipes hold is written, then they and
// its file are closed. No instance must be starting with its files.
func (w *Writer) Remove(label string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.files[label]; ok && !w.closed {
		delete(w.files, label)
		w.post(message{kind: mRemove, label: label})
	}
}

// Ended tells that an instance of label is gone: what it left in the
// pipes is written, and a last line without a newline with it.
func (w *Writer) Ended(label string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.post(message{kind: mEnded, label: label})
	}
}

// Yield tells that label is recovering (its new instance is starting
// after a crash): for at most d, or until Recovered(label), the output
// of services that flood is not read, so that they block on their full
// pipes rather than take the CPU from label's start. Nothing is lost;
// label's own output is read on. It never waits.
func (w *Writer) Yield(label string, d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.post(message{kind: mYield, label: label, until: time.Now().Add(d)})
	}
}

// Recovered ends label's Yield: its new instance is ready, or gone.
func (w *Writer) Recovered(label string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.post(message{kind: mRecovered, label: label})
	}
}

// Reopen closes every log file; each is opened again (made if it is
// gone) at its next line. For an external logrotate.
func (w *Writer) Reopen() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.post(message{kind: mReopen})
	}
}

// Status tells how logging goes for label (zero if it has no file).
func (w *Writer) Status(label string) Stat {
	w.mu.Lock()
	defer w.mu.Unlock()
	if sf := w.files[label]; sf != nil && sf.stat != nil {
		return *sf.stat
	}
	return Stat{}
}

// Close writes out what the pipes hold and closes everything, waiting at
// most d (for a disk that does not answer).
func (w *Writer) Close(d time.Duration) {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.post(message{kind: mClose})
		w.closed = true
		w.mu.Unlock()
	})
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.done:
	case <-t.C:
		return
	}
	c := make(chan struct{})
	go func() { w.compress.Wait(); close(c) }()
	select {
	case <-c:
	case <-t.C:
	}
}

// post queues m and wakes the goroutine; w.mu is held. An eventfd write
// of 1 does not block (the counter would have to reach 2^64-1).
func (w *Writer) post(m message) {
	w.queue = append(w.queue, m)
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(w.wakefd, one[:])
}

// setStat updates a sink's Stat under the mutex.
func (w *Writer) setStat(s *sink, f func(*Stat)) {
	w.mu.Lock()
	f(s.stat)
	w.mu.Unlock()
}

// DefaultDir is rs's log directory when --log-dir is not given:
// /var/log/rs for root; else $XDG_STATE_HOME/rs/log, else
// ~/.local/state/rs/log.
func DefaultDir() string {
	if os.Geteuid() == 0 {
		return "/var/log/rs"
	}
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "rs", "log")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "rs", "log")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("rs-%d", os.Getuid()), "log")
}
