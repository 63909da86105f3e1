package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/reincarnation/rs/rs/control"
	logfile "github.com/reincarnation/rs/rs/logs"
)

// A stream (logs -f, events) whose connection rs closed without a final
// reply asks again: rs exec'd (update-self, or the re-exec after a panic
// in its loop) and the new image answers on the same socket, which
// crossed the exec. It gives up when nothing listens there any more (rs
// is gone) or when no rs has answered within resumeWait.
const resumeWait = 30 * time.Second

// resumeServed: a stream cut after this long was being served, and a
// cut then starts a new resumeWait.
const resumeServed = time.Second

// streamResumed runs cl.Stream(ctx, req, each) and, each time rs closes
// the connection mid-stream, says so on stderr (what names the command)
// and runs it again with again(req) (nil: req as it is), which may start
// where the last one ended.
func streamResumed(ctx context.Context, cl control.Client, what string, req control.Request, again func(control.Request) control.Request, each func(control.Reply) error) (control.Reply, error) {
	var cutAt time.Time // the first cut with no answer since; zero once one came
	delay := 5 * time.Millisecond
	for ask := req; ; {
		answered, began := false, time.Now()
		r, err := cl.Stream(ctx, ask, func(r control.Reply) error {
			answered = true
			return each(r)
		})
		// A stream cut after sending nothing but keepalives (a quiet
		// service) was served all the same if it lasted: a new image
		// answers in well under a second. (A timeout is 5s of silence,
		// keepalives included: not served.)
		if answered || errors.Is(err, control.ErrClosed) && time.Since(began) > resumeServed {
			cutAt, delay = time.Time{}, 5*time.Millisecond
		}
		// A dial to the socket while the new image starts waits in its
		// backlog; a timeout or another cut before it answers is retried.
		retry := errors.Is(err, control.ErrClosed) || !cutAt.IsZero() && errors.Is(err, control.ErrTimeout)
		if !retry || ctx.Err() != nil {
			return r, err
		}
		if cutAt.IsZero() {
			cutAt = time.Now()
			fmt.Fprintf(os.Stderr, "service: %s: rs closed the connection (update-self?); asking again\n", what)
		}
		if time.Since(cutAt) > resumeWait {
			return r, fmt.Errorf("%s: no rs answered within %v after the connection ended: %w", what, resumeWait, err)
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
		if again != nil {
			ask = again(req)
		}
	}
}

// shownLines remembers the log lines a follow printed lately, so that a
// follow asked again from a little before the cut prints none twice. A
// line's key is its label and its whole text, rs's stamp (to the
// microsecond) included; lines read in one piece share a stamp, so a key
// counts how many times it was printed.
type shownLines struct {
	count map[string]int
	order []shownLine // oldest first, from head
	head  int
	// skip is, in a follow asked again, what of count its lines have not
	// brought back yet.
	skip map[string]int
}

type shownLine struct {
	t   time.Time
	key string
}

// A follow asked again starts at the oldest line kept: lines stamped
// within shownSpan of the latest one, at most shownMax of them. rs's
// follow polls the files every 100 ms, so what it had not sent at the
// cut is far younger.
const (
	shownSpan = 10 * time.Second
	shownMax  = 100000
)

func lineKey(l control.LogLine) string { return l.Label + "\x00" + l.Line }

// again starts a follow asked again: its lines up to those printed are
// skipped.
func (s *shownLines) again() {
	s.skip = make(map[string]int, len(s.count))
	for k, n := range s.count {
		s.skip[k] = n
	}
}

// printed reports whether l was printed before the follow was asked
// again (and is to be skipped); if not, it remembers l as printed now.
func (s *shownLines) printed(l control.LogLine) bool {
	key := lineKey(l)
	if s.skip[key] > 0 {
		s.skip[key]--
		return true
	}
	t, ok := logfile.LineTime(l.Line)
	if !ok {
		return false
	}
	if s.count == nil {
		s.count = map[string]int{}
	}
	s.count[key]++
	s.order = append(s.order, shownLine{t, key})
	for len(s.order)-s.head > shownMax || s.order[s.head].t.Before(t.Add(-shownSpan)) {
		old := s.order[s.head].key
		if s.count[old]--; s.count[old] <= 0 {
			delete(s.count, old)
		}
		s.order[s.head] = shownLine{}
		s.head++
	}
	if s.head > len(s.order)/2 {
		s.order = append(s.order[:0], s.order[s.head:]...)
		s.head = 0
	}
	return false
}

// since is where a follow asked again starts: the oldest line kept, or
// the zero time when none is.
func (s *shownLines) since() time.Time {
	if s.head == len(s.order) {
		return time.Time{}
	}
	return s.order[s.head].t
}
