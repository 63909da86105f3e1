package main

import (
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
)

// connStats counts connections. The connection goroutines update it and
// the main loop reads it for INFO, hence atomics rather than loop state.
type connStats struct {
	current atomic.Int64
	total   atomic.Int64
}

// infoSections are the sections INFO knows, in the order it prints them.
// "server" is always printed: it carries the lines the contract promises
// (version, process_id, uptime_in_seconds) whatever section was asked for.
var infoSections = []string{"server", "clients", "stats", "keyspace"}

// info answers INFO [section ...]. No section, "default", "all" and
// "everything" mean every section; unknown names add nothing, as in Redis.
func (e *engine) info(args []string, out []byte) ([]byte, effect) {
	want := map[string]bool{"server": true}
	if len(args) == 1 {
		for _, s := range infoSections {
			want[s] = true
		}
	}
	for _, a := range args[1:] {
		switch a = strings.ToLower(a); a {
		case "default", "all", "everything":
			for _, s := range infoSections {
				want[s] = true
			}
		default:
			want[a] = true
		}
	}
	var b strings.Builder
	for _, s := range infoSections {
		if !want[s] {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		e.infoSection(&b, s)
	}
	return appendBulk(out, b.String()), effect{}
}

// infoSection writes one "# Name" block. Lines end in CRLF as Redis's do,
// since client libraries split INFO on that.
func (e *engine) infoSection(b *strings.Builder, section string) {
	m := e.meta
	line := func(k, v string) {
		b.WriteString(k)
		b.WriteByte(':')
		b.WriteString(v)
		b.WriteString("\r\n")
	}
	num := func(k string, n int64) { line(k, strconv.FormatInt(n, 10)) }
	switch section {
	case "server":
		b.WriteString("# Server\r\n")
		line("version", m.version)
		num("process_id", int64(m.pid))
		num("uptime_in_seconds", int64(m.now().Sub(m.started).Seconds()))
		line("label", m.label)
		line("init_type", m.initType)
		num("restarts", int64(m.restarts))
		line("go_version", runtime.Version())
		line("allow_faults", strconv.FormatBool(e.allowFaults))
	case "clients":
		b.WriteString("# Clients\r\n")
		num("connected_clients", m.conns.current.Load())
		if m.blocked != nil {
			num("blocked_clients", int64(m.blocked()))
		}
	case "stats":
		b.WriteString("# Stats\r\n")
		num("total_connections_received", m.conns.total.Load())
		num("total_commands_processed", e.processed)
	case "keyspace":
		b.WriteString("# Keyspace\r\n")
		line("db0", "keys="+strconv.Itoa(e.data.len()))
	}
}
