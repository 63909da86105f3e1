// Command idle is the smallest useful sef service: it starts, answers rs's
// pings from its receive loop and stops when asked. The scale benchmark
// runs a thousand of them; it is also a template for a new service.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/reincarnation/rs/sef"
)

func main() {
	s, err := sef.Startup(context.Background(), sef.Callbacks{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "idle:", err)
		os.Exit(1)
	}
	for {
		if _, err := s.Receive(context.Background()); errors.Is(err, sef.ErrStopped) {
			return
		}
	}
}
