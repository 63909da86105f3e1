package rs

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

func TestApply(t *testing.T) {
	base := Spec{Label: "kv", Binary: "/bin/kv", Period: time.Second, PingTimeout: 3 * time.Second, MaxRestarts: 5}
	var p control.Patch
	for k, v := range map[string]string{"period": "2s", "restart": "on-failure", "args": "a b", "memory": "1MiB"} {
		if err := p.SetFlag(k, v); err != nil {
			t.Fatal(err)
		}
	}
	got, err := base.Apply(&p)
	if err != nil {
		t.Fatal(err)
	}
	if got.Period != 2*time.Second || got.PingTimeout != 0 || got.Restart != RestartOnFailure ||
		strings.Join(got.Args, " ") != "a b" || got.Memory != 1<<20 || got.MaxRestarts != 5 || got.Binary != "/bin/kv" {
		t.Fatalf("applied: %+v", got)
	}
	if base.Period != time.Second {
		t.Fatal("Apply changed its receiver")
	}
	for k, want := range map[string]string{
		"max_restarts": `service "kv": max_restarts 0: want a positive number`,
		"open_files":   `service "kv": open_files: want a positive integer, got 0`,
		"memory":       `service "kv": memory 0: want a positive number of bytes`,
		"pids":         `service "kv": pids 0: want a positive number of processes`,
	} {
		var p control.Patch
		if err := p.SetFlag(k, "0"); err != nil {
			t.Fatal(err)
		}
		_, err := base.Apply(&p)
		var se *SpecError
		if err == nil || !strings.HasPrefix(err.Error(), want) || !errors.As(err, &se) || se.Keys[0] != k {
			t.Errorf("%s 0: %v", k, err)
		}
	}
}

func TestValidate(t *testing.T) {
	spec := func(label string, deps ...string) Spec {
		return Spec{Label: label, Binary: "/bin/true", Period: time.Second, Depends: deps}
	}
	with := func(s Spec, f func(*Spec)) Spec { f(&s); return s }
	tests := []struct {
		name  string
		specs []Spec
		err   string // prefix; "" for none
		is    error
	}{
		{"fine", []Spec{spec("a"), spec("b", "a")}, "", nil},
		{"period too short", []Spec{with(spec("a"), func(s *Spec) { s.Period = time.Nanosecond })},
			`service "a": period 1ns: shorter than 10ms`, nil},
		{"no pings is fine", []Spec{with(spec("a"), func(s *Spec) { s.Period = 0 })}, "", nil},
		{"ping timeout too short", []Spec{with(spec("a"), func(s *Spec) { s.PingTimeout = time.Millisecond })},
			`service "a": ping_timeout 1ms: shorter than 10ms`, nil},
		{"negative", []Spec{with(spec("a"), func(s *Spec) { s.StopGrace = -time.Second })},
			`service "a": stop_grace "-1s": negative duration`, nil},
		{"relative binary", []Spec{with(spec("a"), func(s *Spec) { s.Binary = "bin/kv" })},
			`service "a": binary "bin/kv": path must be absolute`, nil},
		{"bad restart", []Spec{with(spec("a"), func(s *Spec) { s.Restart = "sometimes" })},
			`service "a": restart "sometimes"`, nil},
		{"backoff", []Spec{with(spec("a"), func(s *Spec) { s.BackoffBase = time.Minute })},
			`service "a": backoff_base 1m0s exceeds backoff_cap 10s`, nil},
		{"unknown dependency", []Spec{spec("a", "zz")}, `service "a": depends on unknown service "zz"`, ErrUnknownService},
		// `down a`, then `up --depends b a` with b depending on a.
		{"cycle through the table", []Spec{spec("b", "a"), spec("a", "b")}, "dependency cycle: b -> a -> b", ErrDependencyCycle},
		{"self", []Spec{spec("a", "a")}, "dependency cycle: a -> a", ErrDependencyCycle},
		{"duplicate", []Spec{spec("a"), spec("a")}, `service "a": defined twice`, ErrDuplicateLabel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.specs)
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.err) {
				t.Fatalf("error %v, want %s", err, tt.err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("%v is not %v", err, tt.is)
			}
		})
	}
}

// The config file goes through the same checks and points at the key.
func TestConfigValidated(t *testing.T) {
	_, err := ParseConfig("f.toml", []byte("[service.kv]\nbinary = \"/x\"\n\nperiod = \"1ns\"\n"))
	if err == nil || !strings.HasPrefix(err.Error(), `f.toml:4: service "kv": period 1ns: shorter than 10ms`) {
		t.Fatalf("got %v", err)
	}
}

// Ordering a long chain stays fast: one `service up` checks the whole table.
func BenchmarkValidate10000(b *testing.B) {
	specs := make([]Spec, 10000)
	for i := range specs {
		specs[i] = Spec{Label: fmt.Sprintf("s%05d", i), Binary: "/bin/true"}
		if i > 0 {
			specs[i].Depends = []string{specs[i-1].Label}
		}
	}
	for b.Loop() {
		if err := Validate(specs); err != nil {
			b.Fatal(err)
		}
	}
}

// failed_retry: unset is the default, "0s" said explicitly is never, a
// negative one is refused; either passes Validate.
func TestFailedRetry(t *testing.T) {
	base := Spec{Label: "kv", Binary: "/bin/kv"}
	if got := base.withDefaults().FailedRetry; got != DefaultFailedRetry {
		t.Errorf("unset: %v, want %v", got, DefaultFailedRetry)
	}
	for flag, want := range map[string]time.Duration{"0s": FailedRetryNever, "5s": 5 * time.Second} {
		var p control.Patch
		if err := p.SetFlag("failed_retry", flag); err != nil {
			t.Fatal(err)
		}
		got, err := base.Apply(&p)
		if err != nil {
			t.Fatalf("%s: %v", flag, err)
		}
		if got.withDefaults().FailedRetry != want {
			t.Errorf("%s: %v, want %v", flag, got.withDefaults().FailedRetry, want)
		}
		if err := Validate([]Spec{got}); err != nil {
			t.Errorf("%s: %v", flag, err)
		}
	}
	var p control.Patch
	if err := p.SetFlag("failed_retry", "-1ns"); err != nil {
		t.Fatal(err)
	}
	if _, err := base.Apply(&p); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Errorf("-1ns: %v, want refused", err)
	}
}
