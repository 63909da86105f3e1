package rs

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// daemon reports rs's own goroutines, fds and memory.
func (s *Server) daemon() *control.Daemon {
	d := &control.Daemon{
		Pid:        os.Getpid(),
		UptimeS:    time.Since(s.started).Seconds(),
		Goroutines: runtime.NumGoroutine(),
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
