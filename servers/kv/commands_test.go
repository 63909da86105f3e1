package main

import (
	"strings"
	"testing"
	"time"
)

func testEngine(allowFaults, standalone bool) *engine {
	return newEngine(allowFaults, standalone, &meta{
		version:  "v9",
		label:    "kv",
		initType: "restart",
		restarts: 2,
		pid:      77,
		started:  time.Unix(100, 0),
		now:      func() time.Time { return time.Unix(142, 0) },
		conns:    &connStats{},
	})
}

// step is one command and its exact reply on the wire.
type step struct {
	args string // split on spaces
	want string
}

func runSteps(t *testing.T, e *engine, steps []step) {
	t.Helper()
	for _, s := range steps {
		out, eff := e.exec(strings.Split(s.args, " "), nil)
		if eff.kind != effNone {
			t.Fatalf("%q: unexpected effect %+v", s.args, eff)
		}
		if string(out) != s.want {
			t.Fatalf("%q = %q, want %q", s.args, out, s.want)
		}
	}
}

func TestCommands(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
	}{
		{"ping", []step{
			{"PING", "+PONG\r\n"},
			{"ping hello", "$5\r\nhello\r\n"},
			{"PING a b", "-ERR wrong number of arguments for 'ping' command\r\n"},
		}},
		{"echo", []step{
			{"ECHO x", "$1\r\nx\r\n"},
			{"ECHO", "-ERR wrong number of arguments for 'echo' command\r\n"},
		}},
		{"set get", []step{
			{"GET k", "$-1\r\n"},
			{"SET k v", "+OK\r\n"},
			{"get k", "$1\r\nv\r\n"},
			{"SeT k w", "+OK\r\n"},
			{"GET k", "$1\r\nw\r\n"},
			{"SET k v EX 10", "-ERR syntax error\r\n"},
			{"SET k", "-ERR wrong number of arguments for 'set' command\r\n"},
			{"GET", "-ERR wrong number of arguments for 'get' command\r\n"},
		}},
		{"del exists dbsize", []step{
			{"SET a 1", "+OK\r\n"},
			{"SET b 2", "+OK\r\n"},
			{"DBSIZE", ":2\r\n"},
			{"EXISTS a a b c", ":3\r\n"},
			{"DEL a c a", ":1\r\n"},
			{"EXISTS a", ":0\r\n"},
			{"DBSIZE", ":1\r\n"},
			{"DEL", "-ERR wrong number of arguments for 'del' command\r\n"},
			{"DBSIZE x", "-ERR wrong number of arguments for 'dbsize' command\r\n"},
		}},
		{"incr", []step{
			{"INCR n", ":1\r\n"},
			{"INCR n", ":2\r\n"},
			{"GET n", "$1\r\n2\r\n"},
			{"SET n -5", "+OK\r\n"},
			{"INCR n", ":-4\r\n"},
			{"SET s abc", "+OK\r\n"},
			{"INCR s", "-ERR value is not an integer or out of range\r\n"},
			{"SET z 007", "+OK\r\n"},
			{"INCR z", "-ERR value is not an integer or out of range\r\n"},
			{"SET m 9223372036854775807", "+OK\r\n"},
			{"INCR m", "-ERR increment or decrement would overflow\r\n"},
			{"GET m", "$19\r\n9223372036854775807\r\n"},
		}},
		{"flushall", []step{
			{"SET a 1", "+OK\r\n"},
			{"FLUSHALL", "+OK\r\n"},
			{"DBSIZE", ":0\r\n"},
			{"FLUSHALL async", "+OK\r\n"},
			{"FLUSHALL later", "-ERR syntax error\r\n"},
		}},
		{"config", []step{
			{"CONFIG GET save", "*0\r\n"},
			{"config get appendonly", "*0\r\n"},
			{"CONFIG GET", "-ERR wrong number of arguments for 'config|get' command\r\n"},
			{"CONFIG SET a b", "-ERR unknown subcommand 'SET'. Try CONFIG GET.\r\n"},
		}},
		{"unknown", []step{
			{"LPUSH l x", "-ERR unknown command 'LPUSH'\r\n"},
			{"averyveryverylongcommandname", "-ERR unknown command 'averyveryverylongcommandname'\r\n"},
			{"x\r\ny", "-ERR unknown command 'x  y'\r\n"}, // CR LF never reach the wire
		}},
		{"debug", []step{
			{"DEBUG SLEEP 0", "+OK\r\n"},
			{"DEBUG SLEEP -1", "-ERR value is not a valid number of seconds\r\n"},
			{"DEBUG SLEEP NaN", "-ERR value is not a valid number of seconds\r\n"},
			{"DEBUG SLEEP inf", "-ERR value is not a valid number of seconds\r\n"},
			{"DEBUG SLEEP 1e300", "-ERR value is not a valid number of seconds\r\n"},
			{"DEBUG SLEEP", "-ERR wrong number of arguments for 'debug|sleep' command\r\n"},
			{"DEBUG RELOAD", "-ERR unknown subcommand 'RELOAD'. Try DEBUG SLEEP or DEBUG FAULT.\r\n"},
			{"DEBUG FAULT panic", "-ERR DEBUG FAULT is disabled; start kv with --allow-faults\r\n"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runSteps(t, testEngine(false, false), tt.steps)
		})
	}
}

func TestDebugEffects(t *testing.T) {
	tests := []struct {
		args       string
		standalone bool
		want       effect
		reply      string // when no effect
	}{
		{"DEBUG SLEEP 0.25", false, effect{kind: effSleep, sleep: 250 * time.Millisecond}, ""},
		{"debug sleep 2", false, effect{kind: effSleep, sleep: 2 * time.Second}, ""},
		{"DEBUG FAULT panic", false, effect{kind: effFault, fault: "panic"}, ""},
		{"DEBUG FAULT Abort", false, effect{kind: effFault, fault: "abort"}, ""},
		{"DEBUG FAULT garbage", false, effect{kind: effFault, fault: "garbage"}, ""},
		{"DEBUG FAULT garbage", true, effect{}, "-ERR fault 'garbage' needs an rs channel; kv runs standalone\r\n"},
		{"DEBUG FAULT spin", true, effect{kind: effFault, fault: "spin"}, ""},
		{"DEBUG FAULT nope", false, effect{}, "-ERR unknown fault kind 'nope' (want one of abort, closechan, exit, garbage, hang, kill, panic, spin, stop)\r\n"},
		{"DEBUG FAULT", false, effect{}, "-ERR wrong number of arguments for 'debug|fault' command\r\n"},
	}
	for _, tt := range tests {
		e := testEngine(true, tt.standalone)
		out, eff := e.exec(strings.Split(tt.args, " "), nil)
		if eff != tt.want || string(out) != tt.reply {
			t.Errorf("%q (standalone %v) = %q, %+v; want %q, %+v", tt.args, tt.standalone, out, eff, tt.reply, tt.want)
		}
	}
}

func TestInfo(t *testing.T) {
	e := testEngine(false, false)
	e.exec([]string{"SET", "a", "b"}, nil)
	e.meta.conns.current.Store(3)
	e.meta.conns.total.Store(9)
	tests := []struct {
		args    string
		want    []string
		notWant []string
	}{
		{"INFO", []string{
			"# Server\r\n", "version:v9\r\n", "process_id:77\r\n", "uptime_in_seconds:42\r\n",
			"label:kv\r\n", "init_type:restart\r\n", "restarts:2\r\n",
			"connected_clients:3\r\n", "total_connections_received:9\r\n", "db0:keys=1\r\n",
		}, nil},
		{"INFO keyspace", []string{"version:v9\r\n", "db0:keys=1\r\n"}, []string{"# Clients"}},
		{"info SERVER", []string{"uptime_in_seconds:42\r\n"}, []string{"# Keyspace"}},
		{"INFO nosuch", []string{"process_id:77\r\n"}, []string{"# Stats"}},
		{"INFO all", []string{"# Stats\r\n", "# Keyspace\r\n"}, nil},
	}
	for _, tt := range tests {
		out, _ := e.exec(strings.Split(tt.args, " "), nil)
		s := string(out)
		if !strings.HasPrefix(s, "$") {
			t.Fatalf("%s: not a bulk reply: %q", tt.args, s)
		}
		for _, w := range tt.want {
			if !strings.Contains(s, w) {
				t.Errorf("%s lacks %q:\n%s", tt.args, w, s)
			}
		}
		for _, w := range tt.notWant {
			if strings.Contains(s, w) {
				t.Errorf("%s has %q:\n%s", tt.args, w, s)
			}
		}
	}
}

func BenchmarkExecSetGet(b *testing.B) {
	e := testEngine(false, false)
	set := []string{"SET", "key", "value"}
	get := []string{"get", "key"}
	var out []byte
	b.ReportAllocs()
	for b.Loop() {
		out, _ = e.exec(set, out[:0])
		out, _ = e.exec(get, out[:0])
	}
}
