package sef_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/reincarnation/rs/sef"
	"github.com/reincarnation/rs/sef/seftest"
)

// A service's main: Startup, then the receive loop. Other goroutines hand
// work to the loop with Post; only the loop touches the state. Without
// rs (no channel in the environment) it runs standalone, as here.
func Example() {
	ctx := context.Background()
	s, err := sef.Startup(ctx, sef.Callbacks{})
	if err != nil {
		fmt.Println(err) // rs has been told; exit non-zero
		return
	}
	go func() { // an acceptor, a timer, a connection reader...
		for _, w := range []string{"a", "b", "quit"} {
			if err := s.Post(ctx, w); err != nil {
				return // the service stopped
			}
		}
	}()
	total := 0
	for {
		w, err := s.Receive(ctx)
		if errors.Is(err, sef.ErrStopped) {
			return // graceful stop: exit 0
		}
		if w == "quit" {
			s.Stop()
			continue
		}
		total++
		fmt.Println("work", w, "total", total)
	}
	// Output:
	// work a total 1
	// work b total 2
}

// Listen returns the listener rs holds for the service (kept across
// crashes, restarts and updates, backlog and all) or opens and stores it.
func ExampleService_Listen() {
	s, err := sef.Startup(context.Background(), sef.Callbacks{})
	if err != nil {
		fmt.Println(err)
		return
	}
	ln, err := s.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	fmt.Println("listening:", port != "0")
	// Output: listening: true
}

// A counter that survives a live update, tested with the fake rs: the
// old instance saves the count, the new one restores it.
func Example_liveUpdate() {
	ctx := context.Background()
	quiet := sef.WithLogger(slog.New(slog.DiscardHandler))
	newCounter := func(count *int) sef.Callbacks {
		return sef.Callbacks{
			LUStateSave: func(_ *sef.Service, w *sef.StateWriter) error {
				_, err := fmt.Fprint(w, *count)
				return err
			},
			LUStateRestore: func(_ *sef.Service, in sef.Init) error {
				_, err := fmt.Fscan(in.State, count)
				return err
			},
		}
	}

	old := 41
	s, rs, err := seftest.Start(ctx, seftest.Init{}, newCounter(&old), quiet)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rs.Close()
	go func() { // the old instance's main loop
		for {
			if _, err := s.Receive(ctx); err != nil {
				return
			}
			old++
		}
	}()
	saved, err := rs.Prepare(ctx, sef.StateWorkFree) // rs: lu-prepare; the state comes back
	if err != nil {
		fmt.Println(err)
		return
	}
	rs.Stop() // the commit stops the old instance

	var count int
	_, rs2, err := seftest.Start(ctx, seftest.Init{Type: sef.InitLiveUpdate, State: saved}, newCounter(&count), quiet)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rs2.Close()
	fmt.Println("restored count:", count, "not taken:", rs2.NotTaken())
	// Output: restored count: 41 not taken: []
}
