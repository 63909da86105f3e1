//go:build rsfault

package main

import (
	"errors"
	"os"
	"os/signal"
	"syscall"

	"github.com/reincarnation/rs/rs"
)

// Test builds only (-tags rsfault): faults rs cannot be driven into
// otherwise.
//
//   - $RS_FAULT_ADOPT set: a new rs refuses the table of an update-self
//     (not on a rollback), so that the old binary comes back;
//   - SIGUSR2: a panic in rs's loop.

func faultAdopt(rollback bool) error {
	if os.Getenv("RS_FAULT_ADOPT") != "" && !rollback {
		return errors.New("rsfault: the table refused, as $RS_FAULT_ADOPT asks")
	}
	return nil
}

func faultHooks(srv *rs.Server) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR2)
	go func() {
		for range c {
			srv.FaultPanic()
		}
	}()
}
