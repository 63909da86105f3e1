package rs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

func specLabels(specs []Spec) []string {
	out := []string{}
	for _, s := range specs {
		out = append(out, s.Label)
	}
	return out
}

func TestConfigGoodFile(t *testing.T) {
	specs, err := LoadConfig("testdata/config/good.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := filepath.Abs("testdata/config")
	if err != nil {
		t.Fatal(err)
	}
	want := []Spec{
		{
			Label:   "kv",
			Binary:  filepath.Join(dir, "bin/kv"),
			Args:    []string{"--listen", "127.0.0.1:7070"},
			Period:  time.Second,
			Restart: RestartAlways,
			Depends: []string{},
			File:    "testdata/config/good.toml",
			Line:    19,
		},
		{
			Label:         "web",
			Binary:        "/usr/local/bin/web",
			Period:        0,
			Restart:       RestartOnFailure,
			Depends:       []string{"kv"},
			PingTimeout:   300 * time.Millisecond,
			InitTimeout:   3 * time.Second,
			StopGrace:     1500 * time.Millisecond,
			BackoffBase:   50 * time.Millisecond,
			BackoffCap:    5 * time.Second,
			BackoffReset:  30 * time.Second,
			RestartWindow: 2 * time.Minute,
			MaxRestarts:   -1,
			Standby:       true,
			File:          "testdata/config/good.toml",
			Line:          4,
		},
		{
			Label:  "plain",
			Binary: filepath.Join(dir, "plain"),
			Period: DefaultPeriod,
			File:   "testdata/config/good.toml",
			Line:   27,
		},
	}
	if !reflect.DeepEqual(specs, want) {
		t.Errorf("got\n%+v\nwant\n%+v", specs, want)
	}
}

func TestConfigEmpty(t *testing.T) {
	for _, data := range []string{"", "# nothing\n", "[service]\n"} {
		specs, err := ParseConfig("e.toml", []byte(data))
		if err != nil || len(specs) != 0 {
			t.Errorf("%q: got %v, %v; want no specs, no error", data, specs, err)
		}
	}
}

func TestConfigRelativeBinary(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sys.toml")
	data := "[service.a]\nbinary = \"bin/a\"\n[service.b]\nbinary = \"../b\"\n[service.c]\nbinary = \"/abs/c\"\n"
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	specs, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "bin/a"), filepath.Join(filepath.Dir(dir), "b"), "/abs/c"}
	for i, s := range specs {
		if s.Binary != want[i] {
			t.Errorf("%s: binary %q, want %q", s.Label, s.Binary, want[i])
		}
		if s.File != path {
			t.Errorf("%s: file %q, want %q", s.Label, s.File, path)
		}
	}

	// A relative config path resolves against the working directory.
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	specs, err = ParseConfig("conf/sys.toml", []byte("[service.a]\nbinary = \"bin/a\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := specs[0].Binary, filepath.Join(cwd, "conf/bin/a"); got != want {
		t.Errorf("binary %q, want %q", got, want)
	}
}

func TestConfigMissingFile(t *testing.T) {
	_, err := LoadConfig(filepath.Join(t.TempDir(), "nope.toml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "nope.toml") {
		t.Errorf("got %v, want a not-exist error naming the file", err)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		data string
		want string // the whole one-line message
		is   error  // if set, errors.Is must hold
	}{
		{"syntax", "[service.kv]\nbinary = \"x\"\nperiod = \n",
			"f.toml:3: expected value but found '\\n' instead", nil},
		{"control character in message", "\"\\\n",
			`f.toml:2: invalid escape in string '\\n'`, nil},
		{"duplicate key", "[service.kv]\nbinary = \"x\"\nbinary = \"y\"\n",
			"f.toml:3: Key 'service.kv.binary' has already been defined.", nil},
		{"bad duration", "[service.kv]\nbinary = \"x\"\nperiod = \"abc\"\n",
			`f.toml:3: service "kv": period "abc": invalid duration`, nil},
		{"duration not a string", "[service.kv]\nbinary = \"x\"\nstop_grace = 5\n",
			`f.toml:3: service "kv": stop_grace: want a duration string such as "1s", got integer 5`, nil},
		{"negative duration", "[service.kv]\nbinary = \"x\"\n\nbackoff_cap = \"-1s\"\n",
			`f.toml:4: service "kv": backoff_cap "-1s": negative duration`, nil},
		{"unknown key", "[service.kv]\nbinary = \"x\"\nperod = \"1s\"\n",
			`f.toml:3: service "kv": unknown key "perod" (did you mean "period"?)`, nil},
		{"unknown key far from all", "[service.kv]\nbinary = \"x\"\ncolour = \"red\"\n",
			`f.toml:3: service "kv": unknown key "colour"`, nil},
		{"unknown top-level key", "[service.kv]\nbinary = \"x\"\n[servce.web]\nbinary = \"y\"\n",
			`f.toml:3: unknown key "servce" (want [service.<label>] tables)`, nil},
		{"service not a table", "service = 3\n",
			`f.toml:1: "service" must be a table of [service.<label>] tables`, nil},
		{"array of tables", "[[service]]\nbinary = \"x\"\n",
			`f.toml:1: "service" must be a table of [service.<label>] tables`, nil},
		{"service entry not a table", "[service]\nkv = \"x\"\n",
			`f.toml:2: service "kv": want a table, got string "x"`, nil},
		{"missing binary", "[service.a]\nbinary = \"x\"\n\n[service.kv]\nargs = []\n",
			`f.toml:4: service "kv": missing binary`, nil},
		{"empty binary", "[service.kv]\nbinary = \"\"\n",
			`f.toml:1: service "kv": missing binary`, nil},
		{"binary not a string", "[service.kv]\nbinary = [\"x\"]\n",
			`f.toml:2: service "kv": binary: want a string, got an array`, nil},
		{"args not strings", "[service.kv]\nbinary = \"x\"\nargs = [\"a\", 1]\n",
			`f.toml:3: service "kv": args: want an array of strings, got an array`, nil},
		{"bad restart", "[service.kv]\nbinary = \"x\"\nrestart = \"sometimes\"\n",
			`f.toml:3: service "kv": restart "sometimes": want always, on-failure or never`, nil},
		{"bad type", "[service.kv]\nbinary = \"x\"\n\ntype = \"forking\"\n",
			`f.toml:4: service "kv": type "forking": want sef, notify or simple`, nil},
		{"type not a string", "[service.kv]\nbinary = \"x\"\ntype = 1\n",
			`f.toml:3: service "kv": type: want a string, got integer 1`, nil},
		{"max_restarts not int", "[service.kv]\nbinary = \"x\"\nmax_restarts = \"5\"\n",
			`f.toml:3: service "kv": max_restarts: want an integer, got string "5"`, nil},
		{"max_restarts zero", "[service.kv]\nbinary = \"x\"\nmax_restarts = 0\n",
			`f.toml:3: service "kv": max_restarts 0: want a positive number, a negative one for unlimited, or restart = "never"`, nil},
		{"standby not bool", "[service.kv]\nbinary = \"x\"\nstandby = \"yes\"\n",
			`f.toml:3: service "kv": standby: want true or false, got string "yes"`, nil},
		{"backoff base over cap", "[service.kv]\nbinary = \"x\"\nbackoff_base = \"20s\"\n",
			`f.toml:3: service "kv": backoff_base 20s exceeds backoff_cap 10s`, nil},
		{"bad label", "[service.kv]\nbinary = \"x\"\n[service._kv]\nbinary = \"x\"\n",
			`f.toml:3: invalid label "_kv": want a letter or digit, then letters, digits, '_', '.' or '-'`, ErrBadLabel},
		{"quoted label with space", "[service.\"a b\"]\nbinary = \"x\"\n",
			`f.toml:1: invalid label "a b": want a letter or digit, then letters, digits, '_', '.' or '-'`, ErrBadLabel},
		{"long label", "[service." + strings.Repeat("a", 65) + "]\nbinary = \"x\"\n",
			`f.toml:1: invalid label "` + strings.Repeat("a", 65) + `": longer than 64 characters`, ErrBadLabel},
		{"unknown dependency", "[service.db]\nbinary = \"x\"\n\n[service.web]\nbinary = \"y\"\ndepends = [\"db\", \"cache\"]\n",
			`f.toml:6: service "web": depends on unknown service "cache"`, ErrUnknownService},
		{"self dependency", "[service.a]\nbinary = \"x\"\ndepends = [\"a\"]\n",
			`f.toml:3: dependency cycle: a -> a`, ErrDependencyCycle},
		{"cycle", "[service.a]\nbinary = \"x\"\ndepends = [\"b\"]\n[service.b]\nbinary = \"x\"\ndepends = [\"a\"]\n",
			`f.toml:3: dependency cycle: a -> b -> a`, ErrDependencyCycle},
		{"cycle behind a dependency",
			"[service.x]\nbinary = \"x\"\ndepends = [\"c\"]\n" +
				"[service.b]\nbinary = \"x\"\ndepends = [\"c\"]\n" +
				"[service.c]\nbinary = \"x\"\ndepends = [\"b\"]\n",
			`f.toml:6: dependency cycle: b -> c -> b`, ErrDependencyCycle},
		{"first error in file order", "[service.b]\nbinary = \"x\"\nperiod = \"x\"\n[service.a]\nbinary = \"x\"\nperiod = \"y\"\n",
			`f.toml:3: service "b": period "x": invalid duration`, nil},
		{"dotted keys", "[service]\nkv.binary = \"x\"\nkv.period = \"q\"\n",
			`f.toml:3: service "kv": period "q": invalid duration`, nil},
		{"hook not absolute", "[service.kv]\nbinary = \"x\"\n\non_exit = [\"hooks/notify.sh\", \"a\"]\n",
			`f.toml:4: service "kv": on_exit "hooks/notify.sh": the hook's program must be an absolute path`, nil},
		{"hook not strings", "[service.kv]\nbinary = \"x\"\non_failure = \"/bin/true\"\n",
			`f.toml:3: service "kv": on_failure: want an array of strings, got string "/bin/true"`, nil},
		{"inline table", "[service]\nkv = { binary = \"x\", perod = \"1s\" }\n",
			`f.toml:2: service "kv": unknown key "perod" (did you mean "period"?)`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			specs, err := ParseConfig("f.toml", []byte(tt.data))
			if err == nil {
				t.Fatalf("no error; specs %+v", specs)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error\n got %s\nwant %s", got, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error has more than one line: %q", err)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Errorf("error %T is not a *ConfigError", err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
		})
	}
}

func TestConfigOrder(t *testing.T) {
	tests := []struct {
		name string
		data string
		want []string
	}{
		{"file order without depends",
			"[service.c]\nbinary=\"x\"\n[service.a]\nbinary=\"x\"\n[service.b]\nbinary=\"x\"\n",
			[]string{"c", "a", "b"}},
		{"dependency moves later",
			"[service.web]\nbinary=\"x\"\ndepends=[\"db\"]\n[service.db]\nbinary=\"x\"\n[service.log]\nbinary=\"x\"\n",
			[]string{"db", "web", "log"}},
		{"chain declared backwards",
			"[service.c]\nbinary=\"x\"\ndepends=[\"b\"]\n[service.b]\nbinary=\"x\"\ndepends=[\"a\"]\n[service.a]\nbinary=\"x\"\n",
			[]string{"a", "b", "c"}},
		{"diamond",
			"[service.top]\nbinary=\"x\"\ndepends=[\"l\",\"r\"]\n[service.r]\nbinary=\"x\"\ndepends=[\"base\"]\n" +
				"[service.l]\nbinary=\"x\"\ndepends=[\"base\"]\n[service.base]\nbinary=\"x\"\n",
			[]string{"base", "r", "l", "top"}},
		{"two services in file order",
			"[service.b]\nbinary=\"x\"\n[service.a]\nbinary=\"x\"\n",
			[]string{"b", "a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			specs, err := ParseConfig("f.toml", []byte(tt.data))
			if err != nil {
				t.Fatal(err)
			}
			if got := specLabels(specs); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("order %v, want %v", got, tt.want)
			}
		})
	}
}

func TestConfigStartOrder(t *testing.T) {
	spec := func(label string, deps ...string) Spec {
		return Spec{Label: label, Binary: "/bin/true", Depends: deps}
	}
	tests := []struct {
		name  string
		specs []Spec
		want  []string
		err   string
		is    error
	}{
		{"empty", nil, []string{}, "", nil},
		{"stable", []Spec{spec("b"), spec("a", "c"), spec("c"), spec("d")},
			[]string{"b", "c", "a", "d"}, "", nil},
		{"unknown", []Spec{spec("a"), spec("b", "a", "zz")},
			nil, `service "b": depends on unknown service "zz"`, ErrUnknownService},
		{"bad label", []Spec{spec("a b")},
			nil, `invalid label "a b": want a letter or digit, then letters, digits, '_', '.' or '-'`, ErrBadLabel},
		{"duplicate", []Spec{spec("a"), spec("a")},
			nil, `service "a": defined twice`, ErrDuplicateLabel},
		{"cycle of three", []Spec{spec("x"), spec("c", "a"), spec("a", "b"), spec("b", "c")},
			nil, `dependency cycle: c -> a -> b -> c`, ErrDependencyCycle},
		{"located", []Spec{{Label: "a", Depends: []string{"q"}, File: "s.toml", Line: 9}},
			nil, `s.toml:9: service "a": depends on unknown service "q"`, ErrUnknownService},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]Spec(nil), tt.specs...)
			got, err := StartOrder(tt.specs)
			if !reflect.DeepEqual(in, tt.specs) {
				t.Errorf("input modified: %v", specLabels(tt.specs))
			}
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error %v, want %s", err, tt.err)
				}
				if !errors.Is(err, tt.is) {
					t.Errorf("error %v is not %v", err, tt.is)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l := specLabels(got); !reflect.DeepEqual(l, tt.want) {
				t.Errorf("order %v, want %v", l, tt.want)
			}
		})
	}
}

func TestConfigCheckLabel(t *testing.T) {
	for _, ok := range []string{"kv", "KV-2", "a.b_c", "0", strings.Repeat("x", 64)} {
		if err := CheckLabel(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", ".a", "_a", "a b", "a/b", "é", strings.Repeat("x", 65)} {
		if err := CheckLabel(bad); !errors.Is(err, ErrBadLabel) {
			t.Errorf("%q: got %v, want ErrBadLabel", bad, err)
		}
	}
}

// FuzzConfig: any input yields specs or a one-line error, never a panic.
func FuzzConfig(f *testing.F) {
	good, err := os.ReadFile("testdata/config/good.toml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("[service]\nkv = { binary = \"x\", depends = [\"kv\"] }\n"))
	f.Add([]byte("[service.a]\nbinary=\"x\"\ndepends=[\"b\"]\n[service.b]\nbinary=\"x\"\ndepends=[\"a\"]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		specs, err := ParseConfig("f.toml", data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error has more than one line: %q", err)
			}
			return
		}
		if _, err := StartOrder(specs); err != nil {
			t.Errorf("parsed specs fail StartOrder: %v", err)
		}
	})
}

// The one-pass scan finds plain headers and leaves the rest to the TOML
// library's probe; the lines come out the same either way.
func TestServiceHeaders(t *testing.T) {
	data := "[service.a]\nbinary = \"/x\"\n  [ service . \"b.c\" ] # quoted\nbinary = \"/x\"\n" +
		"[service]\nd.binary = \"/x\"\n[service.e]\nbinary = \"\"\"\n[service.e]\n\"\"\"\n"
	got := serviceHeaders([]byte(data))
	want := map[string]int{"a": 1, "b.c": 3}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("headers %v, want %v (e is seen twice, d has no header)", got, want)
	}
	specs, err := ParseConfig("f.toml", []byte(strings.Replace(data, "[service.e]\nbinary = \"\"\"\n[service.e]\n\"\"\"\n", "[service.e]\nbinary = \"/x\"\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]int{}
	for _, s := range specs {
		lines[s.Label] = s.Line
	}
	if !reflect.DeepEqual(lines, map[string]int{"a": 1, "b.c": 3, "d": 6, "e": 7}) {
		t.Fatalf("lines %v", lines)
	}
}

// TestConfigOfTenThousand: a file of ten thousand services, each with a
// few keys and a dependency, loads and validates whole and in order (a
// file of 8,000 once took 13 s: lines were probed for every service).
func TestConfigOfTenThousand(t *testing.T) {
	const n = 10000
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "[service.s%05d]\nbinary = \"bin/kv\"\nargs = [\"--listen\", \"127.0.0.1:%d\"]\nperiod = \"2s\"\nrestart = \"on-failure\"\nmemory = \"64MiB\"\n", i, 10000+i)
		if i > 0 {
			fmt.Fprintf(&b, "depends = [\"s%05d\"]\n", (i-1)/2)
		}
	}
	start, cpu0 := time.Now(), cpuTime()
	specs, err := ParseConfig("conf/big.toml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(specs); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d services (%d KiB) loaded and validated in %v (CPU %v)", n, b.Len()>>10, time.Since(start), cpuTime()-cpu0)
	if len(specs) != n {
		t.Fatalf("%d specs", len(specs))
	}
	at := map[string]int{}
	for i, s := range specs {
		at[s.Label] = i
	}
	for i, s := range specs {
		for _, d := range s.Depends {
			if at[d] >= i {
				t.Fatalf("%s at %d before its dependency %s", s.Label, i, d)
			}
		}
		if s.Memory != 64<<20 || s.Restart != RestartOnFailure || s.Period != 2*time.Second || !filepath.IsAbs(s.Binary) {
			t.Fatalf("%s: %+v", s.Label, s)
		}
	}
}

// cpuTime is the CPU this process has used: a figure for the log that a
// loaded machine changes less than the wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// The type key: sef when not said, notify when said; withDefaults fills
// in sef for a Spec made without one.
func TestConfigType(t *testing.T) {
	specs, err := ParseConfig("f.toml", []byte("[service.a]\nbinary = \"/x\"\n[service.b]\nbinary = \"/x\"\ntype = \"notify\"\n[service.c]\nbinary = \"/x\"\ntype = \"sef\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := []string{specs[0].withDefaults().Type, specs[1].Type, specs[2].Type}
	if want := []string{TypeSef, TypeNotify, TypeSef}; !reflect.DeepEqual(got, want) {
		t.Fatalf("types %v, want %v", got, want)
	}
	if err := Validate([]Spec{{Label: "a", Binary: "/x", Type: "oneshot"}}); err == nil || !strings.Contains(err.Error(), `type "oneshot"`) {
		t.Fatalf("Validate of type oneshot: %v", err)
	}
}
