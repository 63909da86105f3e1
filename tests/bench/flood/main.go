// Command flood is the logs benchmark's service (tests/bench/logs.go): it
// writes lines of one size to its stdout as fast as it can, then idles
// until it is stopped, so that no supervisor restarts it.
//
//	flood [-line 100] [-bytes 33554432] [-go FIFO]
//
// Line i is "flood:" and i in ten digits, a space, 'x' up to -line bytes
// with its newline, so that a reader can find the text behind any
// logger's prefix and check that every line came once. Each write(2)
// carries whole lines, as many as fit in 64 KiB: what a service with a
// buffered stdout does. -bytes 0 writes until stopped. With -go, flood
// opens that FIFO for reading first and starts writing only once the
// bench opens its other end: the bench starts the clock then.
//
// It runs under rs (sef's handshake, pings answered while it writes) and
// standalone (no channel: under runsv, s6 or a shell pipe); SIGTERM stops
// it either way.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/reincarnation/rs/sef"
)

const (
	prefix   = "flood:"
	digits   = 10
	minLine  = len(prefix) + digits + 2 // the number, a space, the newline
	chunkMax = 64 << 10
)

func main() {
	line := flag.Int("line", 100, "bytes per line, newline included")
	total := flag.Int64("bytes", 32<<20, "bytes to write, whole lines (rounded down); 0: until stopped")
	fifo := flag.String("go", "", "FIFO to open for reading before the first write")
	flag.Parse()
	if *line < minLine || *line > chunkMax || *total < 0 {
		fmt.Fprintf(os.Stderr, "flood: -line must be %d..%d, -bytes >= 0\n", minLine, chunkMax)
		os.Exit(2)
	}
	s, err := sef.Startup(context.Background(), sef.Callbacks{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "flood:", err)
		os.Exit(1)
	}
	go func() {
		if err := flood(*line, *total, *fifo); err != nil {
			fmt.Fprintln(os.Stderr, "flood:", err)
			os.Exit(1)
		}
	}()
	for {
		if _, err := s.Receive(context.Background()); errors.Is(err, sef.ErrStopped) {
			return
		}
	}
}

// flood writes lines of size bytes to stdout, total bytes in all (0: no
// end).
func flood(size int, total int64, fifo string) error {
	if fifo != "" {
		f, err := os.Open(fifo) // blocks until the bench opens it to write
		if err != nil {
			return err
		}
		f.Close()
	}
	per := chunkMax / size
	buf := make([]byte, per*size)
	for i := range per {
		l := buf[i*size : (i+1)*size]
		copy(l, prefix)
		for j := len(prefix) + digits; j < size-1; j++ {
			l[j] = 'x'
		}
		l[len(prefix)+digits] = ' '
		l[size-1] = '\n'
	}
	lines := total / int64(size)
	var seq int64
	for total == 0 || seq < lines {
		n := int64(per)
		if total != 0 {
			n = min(n, lines-seq)
		}
		for i := range n {
			putSeq(buf[int(i)*size+len(prefix):], seq+i)
		}
		if _, err := os.Stdout.Write(buf[:int(n)*size]); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		seq += n
	}
	return nil
}

// putSeq writes v in ten decimal digits at b.
func putSeq(b []byte, v int64) {
	for i := digits - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
}
