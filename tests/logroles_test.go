package tests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/sef"
)

// logRole runs the roles of the log tests (logs_test.go).
func logRole(role string, args []string) int {
	switch role {
	case "last-words": // after init: 200 lines on each stream, a line with no newline, then SIGKILL itself
		if _, err := sef.Startup(context.Background(), sef.Callbacks{}); err != nil {
			return 1
		}
		for i := range 200 {
			fmt.Fprintf(os.Stdout, "word %d\n", i)
			fmt.Fprintf(os.Stderr, "eword %d\n", i)
		}
		fmt.Fprint(os.Stdout, "no newline at the end")
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	case "counter": // "n <i>" on stdout every millisecond; i goes on across live updates
		return counter()
	case "says-up": // says "up" on stderr in its init, then serves
		say := func(s *sef.Service, in sef.Init) error {
			fmt.Fprintf(os.Stderr, "up, restarts %d\n", in.Restarts)
			return nil
		}
		s, err := sef.Startup(context.Background(), sef.Callbacks{InitFresh: say, InitRestart: say})
		if err != nil {
			return 1
		}
		return serveForever(s)
	case "flood-lines": // after init, writes lines of 64 KiB + 1 bytes (and a newline) to stdout as fast as it can
		s, err := sef.Startup(context.Background(), sef.Callbacks{})
		if err != nil {
			return 1
		}
		line := []byte(strings.Repeat("f", 64<<10+1) + "\n")
		go func() {
			for {
				os.Stdout.Write(line)
			}
		}()
		return serveForever(s)
	case "nonblock-stderr": // sets O_NONBLOCK on its stderr, says so on it and in the file args[0]
		s, err := sef.Startup(context.Background(), sef.Callbacks{})
		if err != nil {
			return 1
		}
		if err := unix.SetNonblock(2, true); err != nil {
			return 1
		}
		fmt.Fprintln(os.Stderr, "stderr set non-blocking")
		if err := writeAtomic(args[0], "done"); err != nil {
			return 1
		}
		return serveForever(s)
	case "numbered": // after init, writes "n <i>" lines of args[0] bytes as fast as it can
		s, err := sef.Startup(context.Background(), sef.Callbacks{})
		if err != nil {
			return 1
		}
		size, _ := strconv.Atoi(args[0])
		pad := strings.Repeat("p", max(size-20, 0))
		go func() {
			for i := 0; ; i++ {
				fmt.Fprintf(os.Stdout, "n %d %s\n", i, pad)
			}
		}()
		return serveForever(s)
	}
	return 2
}

func counter() int {
	var n uint64
	s, err := sef.Startup(context.Background(), sef.Callbacks{
		InitLiveUpdate: func(s *sef.Service, in sef.Init) error {
			b, err := in.State.Bytes()
			if err != nil {
				return err
			}
			n, err = strconv.ParseUint(string(b), 10, 64)
			return err
		},
		LUStateSave: func(s *sef.Service, w *sef.StateWriter) error {
			_, err := fmt.Fprint(w, n)
			return err
		},
	})
	if err != nil {
		return 1
	}
	go func() {
		for range time.Tick(time.Millisecond) {
			s.Post(context.Background(), struct{}{})
		}
	}()
	for {
		if _, err := s.Receive(context.Background()); errors.Is(err, sef.ErrStopped) {
			return 0
		}
		fmt.Fprintf(os.Stdout, "n %d\n", n)
		n++
	}
}
