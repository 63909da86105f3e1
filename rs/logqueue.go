package rs

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// LogQueue is where rs's own log lines go on their way out: the loop logs
// by handing a line to the queue, never by writing it, so a stderr that
// does not drain (a paused terminal, a full pipe) cannot stop rs. One
// goroutine writes the lines out in order. When the queue is full the
// line is dropped and counted, and once the output moves again Notice
// says how many were lost.
type LogQueue struct {
	// Notice, if set, writes to w that n lines were dropped; it is called
	// from the writing goroutine only.
	Notice func(w io.Writer, n int64)

	w       io.Writer
	lines   chan []byte
	done    chan struct{}
	flushed chan struct{} // a Flush's mark was reached
	dropped atomic.Int64  // since the last notice
	lost    atomic.Int64  // in all
	closed  atomic.Bool
}

// NewLogQueue returns a queue of up to depth lines in front of w, and
// starts its writer; Close ends it.
func NewLogQueue(w io.Writer, depth int) *LogQueue {
	q := &LogQueue{w: w, lines: make(chan []byte, depth), done: make(chan struct{}), flushed: make(chan struct{}, 1)}
	go q.run()
	return q
}

// Write queues a copy of p (one log record) and never waits.
func (q *LogQueue) Write(p []byte) (int, error) {
	if !q.closed.Load() {
		select {
		case q.lines <- append([]byte(nil), p...):
			return len(p), nil
		default:
		}
	}
	q.dropped.Add(1)
	q.lost.Add(1)
	return len(p), nil
}

// Dropped is how many lines were dropped in all.
func (q *LogQueue) Dropped() int64 { return q.lost.Load() }

func (q *LogQueue) run() {
	defer close(q.done)
	for b := range q.lines {
		if b == nil {
			return // Close's mark: everything before it is out
		}
		if len(b) == 0 {
			select { // Flush's mark
			case q.flushed <- struct{}{}:
			default:
			}
			continue
		}
		if n := q.dropped.Swap(0); n > 0 && q.Notice != nil {
			q.Notice(q.w, n)
		}
		q.w.Write(b)
	}
}

// Flush waits until what is queued now is written, at most d (rs's
// exec in place, which ends the queue's goroutine).
func (q *LogQueue) Flush(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-q.flushed: // an old mark's
	default:
	}
	select {
	case q.lines <- []byte{}:
	case <-t.C:
		return
	}
	select {
	case <-q.flushed:
	case <-q.done:
	case <-t.C:
	}
}

// Close writes out what is queued, waiting at most d for an output that
// does not drain, and stops the writer. Lines written after Close are
// dropped.
func (q *LogQueue) Close(d time.Duration) {
	if q.closed.Swap(true) {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	// The channel is never closed: a Write racing Close must not panic.
	select {
	case q.lines <- nil:
	case <-t.C:
		return
	}
	select {
	case <-q.done:
	case <-t.C:
	}
}

// LogFile is rs's own log file (rs --log-file), behind a LogQueue: only
// the queue's goroutine writes it. Reopen, from anywhere, makes the next
// write open the path anew, for an external logrotate that moved it.
type LogFile struct {
	path   string
	f      *os.File
	reopen atomic.Bool
	failed bool // the last open failed: said once, until one succeeds
}

// OpenLogFile opens path for appending (made 0640 if missing).
func OpenLogFile(path string) (*LogFile, error) {
	f, err := openAppend(path)
	if err != nil {
		return nil, err
	}
	return &LogFile{path: path, f: f}, nil
}

func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o640)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	return f, nil
}

// Reopen makes the next Write open the path anew.
func (l *LogFile) Reopen() { l.reopen.Store(true) }

// Write writes p to the file, reopened first if Reopen was called; if
// that open fails the old file is written on and the failure is said
// once, in the old file.
func (l *LogFile) Write(p []byte) (int, error) {
	if l.reopen.Swap(false) {
		f, err := openAppend(l.path)
		switch {
		case err == nil:
			l.f.Close()
			l.f, l.failed = f, false
		case !l.failed:
			l.failed = true
			fmt.Fprintf(l.f, "rs: reopening %s failed, writing on here: %v\n", l.path, err)
		}
	}
	return l.f.Write(p)
}

// Close closes the file.
func (l *LogFile) Close() error { return l.f.Close() }
