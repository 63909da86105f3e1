package rs

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/reincarnation/rs/proc"
	"github.com/reincarnation/rs/rs/control"
)

// statusOf builds the status row of one service.
func (s *Server) statusOf(svc *service) control.Status {
	st := control.Status{
		Label:     svc.spec.Label,
		State:     svc.state(),
		Restarts:  svc.restarts,
		Binary:    svc.spec.Binary,
		Args:      svc.spec.Args,
		LastExit:  svc.lastExit,
		PingRTTUs: svc.rtt.Microseconds(),
		Standby:   svc.wantStandby,
		PeriodMs:  svc.spec.Period.Milliseconds(),
		Depends:   svc.spec.Depends,
		Type:      svc.spec.Type,

		StatusText:     svc.statusText,
		NotifyRejected: svc.notifyRejected.Load(),
		StoredFDs:      len(svc.fdstore),
	}
	if s.logs != nil {
		st.LogError = s.logs.Status(svc.spec.Label).Err
	}
	if st.Args == nil {
		st.Args = []string{}
	}
	if st.Depends == nil {
		st.Depends = []string{}
	}
	if svc.standby != nil {
		st.StandbyPid = svc.standby.pid()
	}
	if p := svc.primary; p != nil {
		st.Pid = p.pid()
		st.Reloading = p.reloading
		if p.phase == phaseRunning {
			st.UptimeS = s.clock.Now().Sub(p.runningSince).Seconds()
		}
	}
	return st
}

func (s *Server) statuses(label string) ([]control.Status, error) {
	if label != "" {
		svc, ok := s.services[label]
		if !ok {
			return nil, fmt.Errorf("%w %q", control.ErrUnknown, label)
		}
		return []control.Status{s.statusOf(svc)}, nil
	}
	labels := append([]string(nil), s.order...)
	sort.Strings(labels)
	out := make([]control.Status, 0, len(labels))
	for _, l := range labels {
		out = append(out, s.statusOf(s.services[l]))
	}
	return out, nil
}

// daemon reports rs's own goroutines, fds and memory. It reads /proc and
// stops the world for a moment (ReadMemStats): never on the loop.
func (s *Server) daemon() *control.Daemon {
	d := &control.Daemon{
		Pid:           os.Getpid(),
		UptimeS:       time.Since(s.started).Seconds(),
		Goroutines:    runtime.NumGoroutine(),
		UnknownEvents: s.unknownEvents.Load(),
		Closing:       s.closing.Load(),
		Watchers:      s.watching.Load(),
		Containment:   proc.Containment().Mode,
	}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		d.FDs = len(ents) - 1 // less the one reading the directory
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	d.HeapKiB = int64(ms.HeapAlloc >> 10)
	if f, err := os.Open("/proc/self/status"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
				d.RSSKiB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				break
			}
		}
		f.Close()
	}
	return d
}
