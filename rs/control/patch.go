package control

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Patch is a change to a service's settings: every non-nil field is a
// setting given, every nil one a setting left as it is. The msgpack name
// of a field is its config key; its flag is the key with '-' for '_'.
// A field's Go type is its kind; tags add what the type cannot say
// (`sep`: how a flag's list is split; `unit:"bytes"`: a size).
//
// Adding a setting: a field here, the field of the same name in rs.Spec,
// and any rule of its own in rs's Validate. The config file, `service
// up`'s flags and the wire follow from the field.
type Patch struct {
	Binary        *string            `msgpack:"binary,omitempty" usage:"path of the binary (required for a new label)"`
	Args          *[]string          `msgpack:"args,omitempty" sep:" " usage:"arguments, split on spaces: \"A B\""`
	Period        *time.Duration     `msgpack:"period,omitempty" usage:"ping period; 0s disables pings (default 1s)"`
	Restart       *string            `msgpack:"restart,omitempty" usage:"always | on-failure | never"`
	Depends       *[]string          `msgpack:"depends,omitempty" sep:"," usage:"labels to depend on: L1,L2"`
	Standby       *bool              `msgpack:"standby,omitempty" usage:"keep a warm standby instance"`
	PingTimeout   *time.Duration     `msgpack:"ping_timeout,omitempty" usage:"how long a ping may go unanswered (default: the period)"`
	InitTimeout   *time.Duration     `msgpack:"init_timeout,omitempty" usage:"bound of the init handshake (default 5s)"`
	StopGrace     *time.Duration     `msgpack:"stop_grace,omitempty" usage:"each step of a graceful stop (default 2s)"`
	BackoffBase   *time.Duration     `msgpack:"backoff_base,omitempty" usage:"first restart delay after the immediate one (default 100ms)"`
	BackoffCap    *time.Duration     `msgpack:"backoff_cap,omitempty" usage:"longest restart delay (default 10s)"`
	BackoffReset  *time.Duration     `msgpack:"backoff_reset,omitempty" usage:"a run this long resets the backoff, and its end does not count toward max_restarts (default 1s)"`
	MaxRestarts   *int               `msgpack:"max_restarts,omitempty" usage:"restarts after runs shorter than backoff_reset, within restart_window, before failed; negative: unlimited (default 10)"`
	RestartWindow *time.Duration     `msgpack:"restart_window,omitempty" usage:"window of max_restarts (default 1m)"`
	FailedRetry   *time.Duration     `msgpack:"failed_retry,omitempty" usage:"a failed service is tried again after this long; 0s: never (default 1m)"`
	Memory        *uint64            `msgpack:"memory,omitempty" unit:"bytes" usage:"memory limit (RLIMIT_DATA, and the cgroup's where rs has a memory controller), e.g. 256MiB"`
	OpenFiles     *uint64            `msgpack:"open_files,omitempty" usage:"open files limit (RLIMIT_NOFILE)"`
	CPUTime       *time.Duration     `msgpack:"cpu_time,omitempty" usage:"CPU time limit (RLIMIT_CPU), e.g. 10m"`
	Pids          *int               `msgpack:"pids,omitempty" usage:"most processes the service may have (cgroup pids controller)"`
	Control       *bool              `msgpack:"control,omitempty" usage:"let the service's own processes use rs's control socket"`
	Log           *string            `msgpack:"log,omitempty" usage:"where its stdout and stderr go: file (LOGDIR/<label>.log) | inherit (rs's own) | null (default file)"`
	LogMaxSize    *uint64            `msgpack:"log_max_size,omitempty" unit:"bytes" usage:"its log file is rotated before it passes this size (default 10MiB)"`
	LogKeep       *int               `msgpack:"log_keep,omitempty" usage:"rotated log files kept: <label>.log.1 to .log.N (default 5)"`
	LogCompress   *bool              `msgpack:"log_compress,omitempty" usage:"gzip rotated log files (.log.1.gz, ...)"`
	Listen        *[]string          `msgpack:"listen,omitempty" sep:"," usage:"sockets rs holds and passes at fd 3..: tcp:HOST:PORT,unix:PATH"`
	ListenNames   *[]string          `msgpack:"listen_names,omitempty" sep:"," usage:"their LISTEN_FDNAMES, one per listen (default listen0,listen1,...)"`
	User          *string            `msgpack:"user,omitempty" usage:"user (name or uid) it runs as; rs must be root"`
	Group         *string            `msgpack:"group,omitempty" usage:"group (name or gid) it runs as (default: the user's)"`
	Env           *map[string]string `msgpack:"env,omitempty" usage:"KEY=VALUE added to its environment (repeatable)"`
	EnvFile       *string            `msgpack:"env_file,omitempty" usage:"file of KEY=VALUE lines read at each start"`
	Workdir       *string            `msgpack:"workdir,omitempty" usage:"its working directory"`
	Umask         *string            `msgpack:"umask,omitempty" usage:"its umask, octal: 0027"`
	StopSignal    *string            `msgpack:"stop_signal,omitempty" usage:"signal of a graceful stop after the stop message's grace (default SIGTERM)"`
	Type          *string            `msgpack:"type,omitempty" usage:"the service's protocol: sef | notify (systemd's sd_notify) | simple (none) (default sef)"`
	Ready         *string            `msgpack:"ready,omitempty" usage:"simple: running once this succeeds: tcp:HOST:PORT | exec:CMD ARGS (default: at once)"`
	Probe         *string            `msgpack:"probe,omitempty" usage:"simple: liveness check, tcp:HOST:PORT | exec:CMD ARGS; a failure reincarnates it"`
	ProbePeriod   *time.Duration     `msgpack:"probe_period,omitempty" usage:"simple: how often the probe runs (default: the period)"`
	ProbeTimeout  *time.Duration     `msgpack:"probe_timeout,omitempty" usage:"simple: how long one probe may take (default: the ping timeout)"`
	ReloadAction  *string            `msgpack:"reload_action,omitempty" usage:"what service reload does when its launch settings changed: restart | update (a live update; sef only, others restart) (default restart)"`
	OnFailure     *[]string          `msgpack:"on_failure,omitempty" sep:" " usage:"hook run when the service enters failed: its argv, split on spaces: \"/path/cmd ARG\""`
	OnExit        *[]string          `msgpack:"on_exit,omitempty" sep:" " usage:"hook run after each unexpected exit of its instance: its argv, split on spaces"`
	HookTimeout   *time.Duration     `msgpack:"hook_timeout,omitempty" usage:"bound of one run of a hook; then its process group is killed (default 30s)"`
}

// MinPeriod is the shortest ping period and ping timeout rs accepts: a
// period of a nanosecond would cost rs a whole core.
const MinPeriod = 10 * time.Millisecond

// CheckValue refuses a value of a setting that has no meaning, whether it
// comes from the config file or from `service up` (a Spec's zero means
// "default", so an explicit zero where that would surprise is an error).
// v has the Go type of the key's kind.
func CheckValue(key string, v any) error {
	f, ok := byKey[key]
	if !ok {
		return fmt.Errorf("unknown key %q", key)
	}
	switch key {
	case "restart":
		switch r := v.(string); r {
		case "", "always", "on-failure", "never":
		default:
			return fmt.Errorf("restart %q: want always, on-failure or never", r)
		}
	case "max_restarts":
		if v.(int) == 0 {
			return fmt.Errorf(`max_restarts 0: want a positive number, a negative one for unlimited, or restart = "never"`)
		}
	case "open_files":
		if v.(uint64) == 0 {
			return fmt.Errorf("open_files: want a positive integer, got 0")
		}
	case "pids":
		if v.(int) <= 0 {
			return fmt.Errorf("pids %d: want a positive number of processes", v.(int))
		}
	case "memory":
		if v.(uint64) == 0 {
			return fmt.Errorf("memory 0: want a positive number of bytes")
		}
	case "log":
		switch m := v.(string); m {
		case "file", "inherit", "null":
		default:
			return fmt.Errorf("log %q: want file, inherit or null", m)
		}
	case "type":
		switch t := v.(string); t {
		case "", "sef", "notify", "simple":
		default:
			return fmt.Errorf("type %q: want sef, notify or simple", t)
		}
	case "reload_action":
		switch a := v.(string); a {
		case "", "restart", "update":
		default:
			return fmt.Errorf("reload_action %q: want restart or update", a)
		}
	case "log_max_size":
		if v.(uint64) == 0 {
			return fmt.Errorf("log_max_size 0: want a positive number of bytes, e.g. 10MiB")
		}
	case "log_keep":
		if n := v.(int); n <= 0 {
			return fmt.Errorf("log_keep %d: want a positive number of rotated files", n)
		}
	}
	if err := checkHook(key, v); err != nil {
		return err
	}
	if err := checkLaunch(key, v); err != nil {
		return err
	}
	if f.Kind != KindDuration {
		return nil
	}
	d := v.(time.Duration)
	switch {
	case d < 0:
		return fmt.Errorf("%s %q: negative duration", key, d.String())
	case key == "period" && d > 0 && d < MinPeriod:
		return fmt.Errorf(`period %v: shorter than %v, the least rs accepts ("0s" disables pings)`, d, MinPeriod)
	case key == "ping_timeout" && d > 0 && d < MinPeriod:
		return fmt.Errorf("ping_timeout %v: shorter than %v, the least rs accepts", d, MinPeriod)
	case (key == "probe_period" || key == "probe_timeout") && d > 0 && d < MinPeriod:
		return fmt.Errorf("%s %v: shorter than %v, the least rs accepts", key, d, MinPeriod)
	}
	return nil
}

// Check is CheckValue of every setting p gives, in Patch's order.
func (p *Patch) Check() error {
	var err error
	p.Given(func(f Field, v any) {
		if err == nil {
			err = CheckValue(f.Key, v)
		}
	})
	return err
}

// Kind is the type of a setting's value.
type Kind int

const (
	KindString   Kind = iota // string
	KindStrings              // []string
	KindDuration             // time.Duration
	KindBool                 // bool
	KindInt                  // int
	KindUint                 // uint64
	KindBytes                // uint64, a size: "256MiB"
	KindEnv                  // map[string]string: a TOML table, KEY=VALUE flags
)

// Field describes one setting of a Patch.
type Field struct {
	Key   string // config key: "ping_timeout"
	Flag  string // flag of `service up`: "ping-timeout"
	Name  string // the Go field, in Patch and rs.Spec: "PingTimeout"
	Kind  Kind
	Usage string
	sep   string
	index int
}

var (
	fields  []Field
	byKey   = map[string]*Field{}
	kindsOf = map[reflect.Type]Kind{
		reflect.TypeFor[string]():            KindString,
		reflect.TypeFor[[]string]():          KindStrings,
		reflect.TypeFor[time.Duration]():     KindDuration,
		reflect.TypeFor[bool]():              KindBool,
		reflect.TypeFor[int]():               KindInt,
		reflect.TypeFor[uint64]():            KindUint,
		reflect.TypeFor[map[string]string](): KindEnv,
	}
)

func init() {
	t := reflect.TypeFor[Patch]()
	for i := range t.NumField() {
		sf := t.Field(i)
		key, _, _ := strings.Cut(sf.Tag.Get("msgpack"), ",")
		kind, ok := kindsOf[sf.Type.Elem()]
		if !ok {
			panic("control: Patch." + sf.Name + " has no kind")
		}
		if sf.Tag.Get("unit") == "bytes" {
			kind = KindBytes
		}
		fields = append(fields, Field{Key: key, Flag: strings.ReplaceAll(key, "_", "-"), Name: sf.Name,
			Kind: kind, Usage: sf.Tag.Get("usage"), sep: sf.Tag.Get("sep"), index: i})
	}
	for i := range fields {
		byKey[fields[i].Key] = &fields[i]
	}
}

// Fields lists every setting, in Patch's order.
func Fields() []Field { return slices.Clone(fields) }

// FieldOf returns the setting of a config key.
func FieldOf(key string) (Field, bool) {
	f, ok := byKey[key]
	if !ok {
		return Field{}, false
	}
	return *f, true
}

// Set sets the setting of key to v, which has the Go type of its kind.
func (p *Patch) Set(key string, v any) error {
	f, ok := byKey[key]
	if !ok {
		return fmt.Errorf("unknown key %q", key)
	}
	fv := reflect.ValueOf(p).Elem().Field(f.index)
	val := reflect.ValueOf(v)
	if !val.IsValid() || val.Type() != fv.Type().Elem() {
		return fmt.Errorf("%s: want a %s, got %T", key, fv.Type().Elem(), v)
	}
	ptr := reflect.New(val.Type())
	ptr.Elem().Set(val)
	fv.Set(ptr)
	return nil
}

// Given calls fn for every setting p gives, in Patch's order, with its
// value.
func (p *Patch) Given(fn func(f Field, v any)) {
	pv := reflect.ValueOf(p).Elem()
	for _, f := range fields {
		if fv := pv.Field(f.index); !fv.IsNil() {
			fn(f, fv.Elem().Interface())
		}
	}
}

// Has tells whether p gives the setting of key.
func (p *Patch) Has(key string) bool {
	f, ok := byKey[key]
	return ok && !reflect.ValueOf(p).Elem().Field(f.index).IsNil()
}

// SetFlag sets the setting of key from a command-line string.
func (p *Patch) SetFlag(key, s string) error {
	f, ok := byKey[key]
	if !ok {
		return fmt.Errorf("unknown key %q", key)
	}
	var v any
	var err error
	switch f.Kind {
	case KindString:
		v = s
	case KindStrings:
		var list []string
		if f.sep == " " {
			list = strings.Fields(s)
		} else {
			for _, e := range strings.Split(s, f.sep) {
				if e = strings.TrimSpace(e); e != "" {
					list = append(list, e)
				}
			}
		}
		if list == nil {
			list = []string{}
		}
		v = list
	case KindDuration:
		var d time.Duration
		if d, err = time.ParseDuration(s); err != nil {
			return fmt.Errorf("--%s %q: want a duration such as 1s", f.Flag, s)
		}
		v = d
	case KindBool:
		var b bool
		if b, err = strconv.ParseBool(s); err != nil {
			return fmt.Errorf("--%s %q: want true or false", f.Flag, s)
		}
		v = b
	case KindInt:
		var n int
		if n, err = strconv.Atoi(s); err != nil {
			return fmt.Errorf("--%s %q: want an integer", f.Flag, s)
		}
		v = n
	case KindUint:
		var n uint64
		if n, err = strconv.ParseUint(s, 10, 64); err != nil {
			return fmt.Errorf("--%s %q: want a positive integer", f.Flag, s)
		}
		v = n
	case KindBytes:
		var n uint64
		if n, err = ParseBytes(s); err != nil {
			return err
		}
		v = n
	case KindEnv:
		// One KEY=VALUE, added to what earlier flags gave.
		k, val, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fmt.Errorf("--%s %q: want KEY=VALUE", f.Flag, s)
		}
		m := map[string]string{}
		if cur := reflect.ValueOf(p).Elem().Field(f.index); !cur.IsNil() {
			maps.Copy(m, cur.Elem().Interface().(map[string]string))
		}
		m[k] = val
		v = m
	}
	return p.Set(key, v)
}

// ParseBytes reads a size: a number of bytes, optionally with a unit
// (B, K/KB/KiB, M/MB/MiB, G/GB/GiB; all powers of 1024).
func ParseBytes(v string) (uint64, error) {
	num := strings.TrimRight(v, "BbKkMmGgIi ")
	unit := strings.ToLower(strings.TrimSpace(v[len(num):]))
	n, err := strconv.ParseUint(strings.TrimSpace(num), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: want a number of bytes, e.g. 256MiB", v)
	}
	shift := map[string]uint{"": 0, "b": 0, "k": 10, "kb": 10, "kib": 10, "m": 20, "mb": 20, "mib": 20, "g": 30, "gb": 30, "gib": 30}
	sh, ok := shift[unit]
	if !ok || n > (1<<63)>>sh {
		return 0, fmt.Errorf("size %q: want a number of bytes, e.g. 256MiB", v)
	}
	return n << sh, nil
}
