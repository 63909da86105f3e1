package rs

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseCheck(t *testing.T) {
	for _, c := range []struct {
		in   string
		addr string
		argv []string
		err  string // a part of the error; "" for none
	}{
		{in: "tcp:127.0.0.1:6380", addr: "127.0.0.1:6380"},
		{in: "tcp:localhost:80", addr: "localhost:80"},
		{in: "tcp:[::1]:5432", addr: "[::1]:5432"},
		{in: "exec:/usr/bin/redis-cli -p 6380 ping", argv: []string{"/usr/bin/redis-cli", "-p", "6380", "ping"}},
		{in: "exec:/bin/true", argv: []string{"/bin/true"}},
		{in: "exec:  /bin/echo \t a  b ", argv: []string{"/bin/echo", "a", "b"}},
		{in: `exec:/bin/sh -c 'echo "$HOME" \ x'`, argv: []string{"/bin/sh", "-c", `echo "$HOME" \ x`}},
		{in: `exec:/bin/echo "a \"b\" \\c" d\ e ''`, argv: []string{"/bin/echo", `a "b" \c`, "d e", ""}},
		{in: `exec:/bin/echo a"b c"'d'`, argv: []string{"/bin/echo", "ab cd"}},
		{in: "tcp:127.0.0.1", err: "want tcp:HOST:PORT"},
		{in: "tcp::6380", err: "want tcp:HOST:PORT"},
		{in: "tcp:host:0", err: "want 1 to 65535"},
		{in: "tcp:host:http", err: "want 1 to 65535"},
		{in: "tcp:host:70000", err: "want 1 to 65535"},
		{in: "exec:", err: "no command"},
		{in: "exec:   ", err: "no command"},
		{in: "exec:redis-cli ping", err: "path must be absolute"},
		{in: "exec:/bin/echo 'a", err: "unterminated single quote"},
		{in: `exec:/bin/echo "a`, err: "unterminated double quote"},
		{in: `exec:/bin/echo a\`, err: "backslash at the end"},
		{in: "exec:/bin/echo a\nb", err: "line break"},
		{in: "exec:/bin/echo \x00", err: "NUL"},
		{in: "http://localhost/", err: "want tcp:HOST:PORT or exec:CMD ARGS"},
		{in: "unix:/run/x.sock", err: "want tcp:HOST:PORT or exec:CMD ARGS"},
	} {
		got, err := parseCheck("probe", c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.HasPrefix(err.Error(), "probe ") ||
				strings.Contains(err.Error(), "\n") {
				t.Errorf("%q: got %v, %v; want an error with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if got.addr != c.addr || !reflect.DeepEqual(got.argv, c.argv) {
			t.Errorf("%q: got addr %q argv %q; want %q %q", c.in, got.addr, got.argv, c.addr, c.argv)
		}
	}
}

func TestValidateChecks(t *testing.T) {
	base := Spec{Label: "s", Binary: "/bin/true", Period: time.Second}
	simple := base
	simple.Type = TypeSimple
	with := func(s Spec, f func(*Spec)) Spec { f(&s); return s }
	for _, c := range []struct {
		name string
		spec Spec
		key  string // the key the error names first; "" for no error
	}{
		{"sef", base, ""},
		{"simple", simple, ""},
		{"simple checks", with(simple, func(s *Spec) {
			s.Ready, s.Probe, s.ProbePeriod, s.ProbeTimeout = "tcp:h:1", "exec:/bin/true", time.Second, time.Second
		}), ""},
		{"unknown type", with(base, func(s *Spec) { s.Type = "forking" }), "type"},
		{"ready on sef", with(base, func(s *Spec) { s.Ready = "tcp:h:1" }), "ready"},
		{"probe on sef", with(base, func(s *Spec) { s.Type, s.Probe = TypeSef, "tcp:h:1" }), "probe"},
		{"probe_period on sef", with(base, func(s *Spec) { s.ProbePeriod = time.Second }), "probe_period"},
		{"probe_timeout on sef", with(base, func(s *Spec) { s.ProbeTimeout = time.Second }), "probe_timeout"},
		{"bad ready", with(simple, func(s *Spec) { s.Ready = "tcp:nope" }), "ready"},
		{"bad probe", with(simple, func(s *Spec) { s.Probe = "exec:ping" }), "probe"},
		{"probe_period without probe", with(simple, func(s *Spec) { s.ProbePeriod = time.Second }), "probe_period"},
		{"short probe_timeout", with(simple, func(s *Spec) { s.Probe, s.ProbeTimeout = "tcp:h:1", time.Millisecond }), "probe_timeout"},
		{"probe with no period", with(simple, func(s *Spec) { s.Probe, s.Period = "tcp:h:1", 0 }), "probe"},
		{"probe_period and no period", with(simple, func(s *Spec) { s.Probe, s.Period, s.ProbePeriod = "tcp:h:1", 0, time.Second }), ""},
		{"simple standby", with(simple, func(s *Spec) { s.Standby = true }), "standby"},
	} {
		err := validateSpec(c.spec)
		if c.key == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		se, ok := err.(*SpecError)
		if !ok || len(se.Keys) == 0 || se.Keys[0] != c.key {
			t.Errorf("%s: got %v; want an error at %q", c.name, err, c.key)
		}
	}
}

func TestSimplePingSchedule(t *testing.T) {
	s := Spec{Type: TypeSimple, Period: 2 * time.Second, PingTimeout: 3 * time.Second}
	if got := s.pingPeriod(); got != 0 {
		t.Errorf("no probe: ping period %v, want 0 (not pinged)", got)
	}
	s.Probe = "tcp:h:1"
	if got, want := s.pingPeriod(), 2*time.Second; got != want {
		t.Errorf("probe period %v, want the period %v", got, want)
	}
	if got, want := s.probeTimeout(), 3*time.Second; got != want {
		t.Errorf("probe timeout %v, want the ping timeout %v", got, want)
	}
	s.ProbePeriod, s.ProbeTimeout = 500*time.Millisecond, 100*time.Millisecond
	if s.pingPeriod() != 500*time.Millisecond || s.pingDeadline() != 100*time.Millisecond+probeSlack {
		t.Errorf("period %v deadline %v", s.pingPeriod(), s.pingDeadline())
	}
	sef := Spec{Period: time.Second, PingTimeout: 300 * time.Millisecond}
	if sef.pingPeriod() != time.Second || sef.pingDeadline() != 300*time.Millisecond {
		t.Errorf("sef: period %v deadline %v", sef.pingPeriod(), sef.pingDeadline())
	}
}

func TestConfigChecksErrors(t *testing.T) {
	for _, c := range []struct{ data, want string }{
		{"[service.a]\nbinary = \"/bin/true\"\nready = \"tcp:127.0.0.1:1\"\n",
			`c.toml:3: service "a": ready: only for type = "simple" (this service is type sef)`},
		{"[service.a]\nbinary = \"/bin/true\"\ntype = \"sef\"\n\nprobe_timeout = \"1s\"\n",
			`c.toml:5: service "a": probe_timeout: only for type = "simple" (this service is type sef)`},
		{"[service.a]\nbinary = \"/bin/true\"\ntype = \"simple\"\nprobe = \"exec:check me\"\n",
			`c.toml:4: service "a": probe "exec:check me": command "check": path must be absolute`},
		{"[service.a]\nbinary = \"/bin/true\"\ntype = \"notify-ish\"\n",
			`c.toml:3: service "a": type "notify-ish": want sef, notify or simple`},
		{"[service.a]\nbinary = \"/bin/true\"\ntype = \"simple\"\nprobe_period = \"5ms\"\n",
			`c.toml:4: service "a": probe_period 5ms: shorter than 10ms, the least rs accepts`},
	} {
		_, err := ParseConfig("c.toml", []byte(c.data))
		if err == nil || err.Error() != c.want {
			t.Errorf("got %v\nwant %s", err, c.want)
		}
	}
	specs, err := ParseConfig("c.toml", []byte("[service.a]\nbinary = \"/bin/true\"\ntype = \"simple\"\n"+
		"ready = \"exec:/bin/true\"\nprobe = \"tcp:127.0.0.1:9\"\nprobe_period = \"2s\"\nprobe_timeout = \"300ms\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := specs[0]
	if s.Type != TypeSimple || s.Ready != "exec:/bin/true" || s.Probe != "tcp:127.0.0.1:9" ||
		s.ProbePeriod != 2*time.Second || s.ProbeTimeout != 300*time.Millisecond {
		t.Errorf("got %+v", s)
	}
}
