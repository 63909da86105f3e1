package rs

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// A log output that does not drain never blocks a writer: lines beyond
// the queue are dropped and counted, and once the output moves the
// notice comes before the next line.
func TestLogQueueNeverBlocks(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	q := NewLogQueue(w, 8)
	q.Notice = func(w io.Writer, n int64) { fmt.Fprintf(w, "dropped %d\n", n) }
	line := strings.Repeat("x", 1000) + "\n"
	done := make(chan struct{})
	go func() {
		// Far more than the pipe (64 KiB) and the queue hold.
		for range 1000 {
			q.Write([]byte(line))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Write blocked on an output that does not drain")
	}
	if q.Dropped() == 0 {
		t.Fatal("nothing dropped with the output stuck")
	}
	lines := make(chan string, 4096)
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 4096), 4096)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() string {
		select {
		case l := <-lines:
			return l
		case <-time.After(20 * time.Second):
			t.Fatal("the output stopped")
			return ""
		}
	}
	for !strings.HasPrefix(next(), "dropped ") {
	}
	// The queue may still be full of lines from before the notice: the
	// line goes in once the output has made room.
	for q.Write([]byte("last\n")); next() != "last"; q.Write([]byte("last\n")) {
	}
	q.Close(5 * time.Second)
	q.Write([]byte("after close\n")) // dropped, no panic
}
