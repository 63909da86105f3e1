package main

import (
	"errors"
	"log/slog"

	"github.com/reincarnation/rs/rs"
	"github.com/reincarnation/rs/rs/control"
	"github.com/reincarnation/rs/rs/metrics"
)

// listenMetrics binds addr for srv's metrics; the gauges come from status
// requests to srv's loop, off it.
func listenMetrics(addr string, srv *rs.Server, log *slog.Logger) (*metrics.Server, error) {
	return metrics.Listen(addr, metrics.New(statusOf(srv), 0), log)
}

// statusOf is the metrics' status: a status request to srv's loop.
func statusOf(srv *rs.Server) metrics.StatusFunc {
	return func() ([]control.Status, error) {
		r := srv.Do(control.Request{Op: control.OpStatus}, nil)
		if r.Err != "" {
			return nil, errors.New(r.Err)
		}
		return r.Services, nil
	}
}
