// Package metrics serves rs's Prometheus metrics (/metrics) and its
// health (/healthz) over HTTP, off rs's loop.
//
// Counters and the ping histogram come from one stream of lifecycle
// events (rs.Server.Watch with pings), read by a goroutine of the
// Collector: a reader that falls behind misses events rather than slow
// the loop, and counts them in rs_events_missed_total. Gauges of the
// services' states come at scrape time from a status request to the
// loop, bounded in time (StatusTimeout): at most one is in flight, and a
// result younger than minStatusAge is reused, so neither a frozen loop nor
// a flood of scrapes piles up work. /healthz answers 200 while that
// request is answered in time, 503 otherwise.
//
// Metrics:
//
//	rs_service_up{label}                       1 while the service is running or updating (its instance serves), else 0
//	rs_service_state{label,state}              1 for the service's state, 0 for the others
//	rs_service_restarts_total{label,reason}    reincarnations after an unexpected end, by the end's kind (terminated, no-heartbeat, ...)
//	rs_service_ping_rtt_seconds{label}         histogram of ping round trips
//	rs_service_updates_total{label,result}     live updates, result committed or rolled_back
//	rs_events_missed_total                     lifecycle events the collector missed (it read too slowly)
//	rs_loop_up                                 1 if rs's loop answered this scrape's status request in time
//
// and the client library's process_* (open fds, RSS, ...) and go_*
// (goroutines, ...) collectors.
package metrics

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/reincarnation/rs/rs/control"
)

// Defaults.
const (
	DefaultStatusTimeout = time.Second
	minStatusAge         = 200 * time.Millisecond
)

// Event names the collector counts (rs/observe.go spells them; rs/metrics
// does not import rs, so that rs could import it).
const (
	evReincarnating   = "reincarnating"
	evPong            = "pong"
	evUpdateCommitted = "update-committed"
	evUpdateRollback  = "update-rolled-back"
	evRemoved         = "removed"
)

// ErrTimeout: the loop did not answer the status request in time.
var ErrTimeout = errors.New("rs's loop did not answer in time")

// StatusFunc asks rs's loop for every service's status. It may block as
// long as the loop does; the Collector bounds its wait.
type StatusFunc func() ([]control.Status, error)

var states = []string{
	control.StateStarting, control.StateRunning, control.StateUpdating, control.StateStopping,
	control.StateBackoff, control.StateDown, control.StateFailed,
}

// Collector holds rs's metrics in a registry of its own.
type Collector struct {
	Registry *prometheus.Registry

	status  StatusFunc
	timeout time.Duration

	restarts *prometheus.CounterVec
	updates  *prometheus.CounterVec
	rtt      *prometheus.HistogramVec
	missed   prometheus.Counter

	upDesc, stateDesc, loopDesc *prometheus.Desc

	mu       sync.Mutex
	inflight chan struct{} // closed when the request in flight ends; nil: none
	last     []control.Status
	lastErr  error
	lastAt   time.Time

	done chan struct{} // closed when the event reader ends
}

// New returns a Collector that asks status for the gauges, waiting at
// most timeout (0: DefaultStatusTimeout); Follow gives it the events.
func New(status StatusFunc, timeout time.Duration) *Collector {
	if timeout <= 0 {
		timeout = DefaultStatusTimeout
	}
	c := &Collector{
		Registry: prometheus.NewRegistry(),
		status:   status,
		timeout:  timeout,
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rs_service_restarts_total",
			Help: "Reincarnations of a service after an unexpected end, by the kind of end (the first word of last_exit).",
		}, []string{"label", "reason"}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rs_service_updates_total",
			Help: "Live updates of a service, by result (committed, rolled_back).",
		}, []string{"label", "result"}),
		rtt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rs_service_ping_rtt_seconds",
			Help:    "Round trips of rs's pings to a service.",
			Buckets: prometheus.ExponentialBucketsRange(20e-6, 1, 17), // 20µs .. 1s
		}, []string{"label"}),
		missed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rs_events_missed_total",
			Help: "Lifecycle events the metrics collector missed because it read too slowly.",
		}),
		upDesc: prometheus.NewDesc("rs_service_up",
			"1 while the service is running or updating (an instance of it serves), else 0.", []string{"label"}, nil),
		stateDesc: prometheus.NewDesc("rs_service_state",
			"1 for the service's state as service status shows it, 0 for the other states.", []string{"label", "state"}, nil),
		loopDesc: prometheus.NewDesc("rs_loop_up",
			"1 if rs's loop answered this scrape's status request in time, else 0.", nil, nil),
		done: make(chan struct{}),
	}
	c.Registry.MustRegister(c.restarts, c.updates, c.rtt, c.missed, (*gauges)(c),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector())
	return c
}

// Follow counts events, in a goroutine of its own, until the channel is
// closed (rs ended, or its watcher closed); call it once.
func (c *Collector) Follow(events <-chan control.Event) {
	go func() {
		defer close(c.done)
		for ev := range events {
			c.count(ev)
		}
	}()
}

// Done is closed once Follow's events have ended.
func (c *Collector) Done() <-chan struct{} { return c.done }

// count takes one event into the counters.
func (c *Collector) count(ev control.Event) {
	if ev.Missed > 0 {
		c.missed.Add(float64(ev.Missed))
	}
	if ev.Label == "" {
		return
	}
	switch ev.Event {
	case evReincarnating:
		kind := ev.Kind
		if kind == "" {
			kind = "unknown"
		}
		c.restarts.WithLabelValues(ev.Label, kind).Inc()
	case evPong:
		c.rtt.WithLabelValues(ev.Label).Observe(ev.RTT.Seconds())
	case evUpdateCommitted:
		c.updates.WithLabelValues(ev.Label, "committed").Inc()
	case evUpdateRollback:
		c.updates.WithLabelValues(ev.Label, "rolled_back").Inc()
	case evRemoved:
		// A label that left the table leaves the metrics: a service
		// added again under it starts from zero, and a host that cycles
		// through many labels does not grow its series without bound.
		only := prometheus.Labels{"label": ev.Label}
		c.restarts.DeletePartialMatch(only)
		c.updates.DeletePartialMatch(only)
		c.rtt.DeletePartialMatch(only)
	}
}

// Statuses returns every service's status as the loop tells it within
// the timeout or ctx, whichever ends first, or ErrTimeout. One request
// at most is in flight; callers meanwhile wait for that one.
func (c *Collector) Statuses(ctx context.Context) ([]control.Status, error) {
	c.mu.Lock()
	if c.inflight == nil && !c.lastAt.IsZero() && time.Since(c.lastAt) < minStatusAge {
		st, err := c.last, c.lastErr
		c.mu.Unlock()
		return st, err
	}
	wait := c.inflight
	if wait == nil {
		wait = make(chan struct{})
		c.inflight = wait
		go func() {
			st, err := c.status()
			c.mu.Lock()
			c.last, c.lastErr, c.lastAt = st, err, time.Now()
			c.inflight = nil
			c.mu.Unlock()
			close(wait)
		}()
	}
	c.mu.Unlock()
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	select {
	case <-wait:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.last, c.lastErr
	case <-t.C:
		return nil, ErrTimeout
	case <-ctx.Done():
		return nil, ErrTimeout
	}
}

// gauges is the scrape-time part of the Collector.
type gauges Collector

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.upDesc
	ch <- g.stateDesc
	ch <- g.loopDesc
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	st, err := (*Collector)(g).Statuses(context.Background())
	if err != nil {
		ch <- prometheus.MustNewConstMetric(g.loopDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(g.loopDesc, prometheus.GaugeValue, 1)
	for _, s := range st {
		up := 0.0
		if s.State == control.StateRunning || s.State == control.StateUpdating {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(g.upDesc, prometheus.GaugeValue, up, s.Label)
		for _, state := range states {
			v := 0.0
			if s.State == state {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(g.stateDesc, prometheus.GaugeValue, v, s.Label, state)
		}
	}
}
