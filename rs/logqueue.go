package rs

import (
	"io"
	"sync/atomic"
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
	dropped atomic.Int64 // since the last notice
	lost    atomic.Int64 // in all
	closed  atomic.Bool
}

// NewLogQueue returns a queue of up to depth lines in front of w, and
// starts its writer; Close ends it.
func NewLogQueue(w io.Writer, depth int) *LogQueue {
	q := &LogQueue{w: w, lines: make(chan []byte, depth), done: make(chan struct{})}
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
		if n := q.dropped.Swap(0); n > 0 && q.Notice != nil {
			q.Notice(q.w, n)
		}
		q.w.Write(b)
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
