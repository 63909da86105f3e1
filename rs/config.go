package rs

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/BurntSushi/toml"
)

// Errors a caller may want to tell apart (errors.Is); they arrive wrapped
// in a *ConfigError that says where.
var (
	ErrUnknownService  = errors.New("depends on unknown service")
	ErrDependencyCycle = errors.New("dependency cycle")
	ErrDuplicateLabel  = errors.New("defined twice")
	ErrBadLabel        = errors.New("invalid label")
)

// MaxLabelLen is the longest label rs accepts.
const MaxLabelLen = 64

var labelRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// CheckLabel reports whether label is a valid service label: a letter or
// digit, then letters, digits, '_', '.' or '-', at most MaxLabelLen bytes.
func CheckLabel(label string) error {
	if len(label) > MaxLabelLen {
		return fmt.Errorf("%w %q: longer than %d characters", ErrBadLabel, label, MaxLabelLen)
	}
	if !labelRE.MatchString(label) {
		return fmt.Errorf("%w %q: want a letter or digit, then letters, digits, '_', '.' or '-'", ErrBadLabel, label)
	}
	return nil
}

// ConfigError is a problem found in a config file, or in a set of Specs.
// Its text is one line: "file:line: message" (or just the message when the
// Spec came from nowhere in particular).
type ConfigError struct {
	File string // as given; "" when unknown
	Line int    // 1-based; 0 when unknown
	Err  error
}

func (e *ConfigError) Error() string {
	switch {
	case e.File != "" && e.Line > 0:
		return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err)
	case e.File != "":
		return fmt.Sprintf("%s: %v", e.File, e.Err)
	}
	return e.Err.Error()
}

func (e *ConfigError) Unwrap() error { return e.Err }

// syntaxError keeps the library's ParseError reachable (errors.As) while
// printing only its message: ConfigError already says file and line.
type syntaxError struct{ pe toml.ParseError }

func (e syntaxError) Error() string { return oneLineError(e.pe.Message) }
func (e syntaxError) Unwrap() error { return e.pe }

// oneLineError escapes newlines and tabs and drops other control
// characters (the library may quote a raw one from the input), so that
// an error stays on one line.
func oneLineError(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, strings.NewReplacer("\n", "\\n", "\r", "\\r", "\t", "\\t").Replace(s))
}

// LoadConfig reads and parses the config file at path (see ParseConfig).
func LoadConfig(path string) ([]Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig parses data, the contents of the config file at path, into
// Specs in start order (see StartOrder). path is only used to resolve
// relative binaries (against its directory) and to name the file in
// errors and in Spec.File; the binaries themselves are not checked.
//
// A zero duration or an absent key means the default, except for period:
// absent means DefaultPeriod and "0s" means no pings.
func ParseConfig(path string, data []byte) ([]Spec, error) {
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, &ConfigError{File: path, Err: err}
	}
	var top map[string]toml.Primitive
	md, err := toml.Decode(string(data), &top)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &ConfigError{File: path, Line: pe.Position.Line, Err: syntaxError{pe}}
		}
		return nil, &ConfigError{File: path, Err: err}
	}
	p := &configParser{file: path, dir: dir, md: &md}
	return p.parse(top)
}

// configParser walks a decoded file in file order, so that the first
// error reported is the first one in the file.
type configParser struct {
	file string
	dir  string // absolute directory of file
	md   *toml.MetaData
	kids map[string][]string // names under each key path (joined by NUL), in file order
}

func (c *configParser) errorf(line int, format string, args ...any) error {
	return &ConfigError{File: c.file, Line: line, Err: fmt.Errorf(format, args...)}
}

// children lists the distinct names found under prefix, in file order.
// The first call indexes every key once: asking each of a thousand
// services for its keys by scanning all of them was quadratic.
func (c *configParser) children(prefix ...string) []string {
	if c.kids == nil {
		c.kids = map[string][]string{}
		seen := map[string]bool{}
		for _, k := range c.md.Keys() {
			for i := range k {
				parent := strings.Join(k[:i], "\x00")
				child := parent + "\x00" + k[i]
				if !seen[child] {
					seen[child] = true
					c.kids[parent] = append(c.kids[parent], k[i])
				}
			}
		}
	}
	return c.kids[strings.Join(prefix, "\x00")]
}

// errProbe makes the decoder report where a value was defined: the
// library attaches the key's position to an error from UnmarshalTOML.
var errProbe = errors.New("position probe")

type posProbe struct{}

func (posProbe) UnmarshalTOML(any) error { return errProbe }

// lineOf returns the line where p's key was defined: its table header or
// its "key =" line. A table that only exists through dotted keys has no
// line of its own; it gets the first line of its contents. 0 if unknown.
func (c *configParser) lineOf(p toml.Primitive) int {
	var pe toml.ParseError
	if err := c.md.PrimitiveDecode(p, &posProbe{}); errors.As(err, &pe) && pe.Position.Line > 0 {
		return pe.Position.Line
	}
	var kids map[string]toml.Primitive
	if c.md.PrimitiveDecode(p, &kids) != nil {
		return 0
	}
	line := 0
	for _, k := range kids {
		if l := c.lineOf(k); l > 0 && (line == 0 || l < line) {
			line = l
		}
	}
	return line
}

func (c *configParser) value(p toml.Primitive) any {
	var v any
	if err := c.md.PrimitiveDecode(p, &v); err != nil {
		return nil
	}
	return v
}

func (c *configParser) parse(top map[string]toml.Primitive) ([]Spec, error) {
	for _, k := range c.children() {
		if k != "service" {
			return nil, c.errorf(c.lineOf(top[k]), "unknown key %q (want [service.<label>] tables)", k)
		}
	}
	sp, ok := top["service"]
	if !ok {
		return nil, nil
	}
	if _, ok := c.value(sp).(map[string]any); !ok {
		return nil, c.errorf(c.lineOf(sp), `"service" must be a table of [service.<label>] tables`)
	}
	var services map[string]toml.Primitive
	if err := c.md.PrimitiveDecode(sp, &services); err != nil {
		return nil, c.errorf(c.lineOf(sp), "service: %v", err)
	}

	var specs []Spec
	dependsLine := map[string]int{}
	for _, label := range c.children("service") {
		s, dl, err := c.service(label, services[label])
		if err != nil {
			return nil, err
		}
		specs = append(specs, s)
		dependsLine[label] = dl
	}
	return startOrder(specs, func(s Spec) (string, int) {
		if l := dependsLine[s.Label]; l > 0 {
			return s.File, l
		}
		return s.File, s.Line
	})
}

// Duration keys, each with the Spec field it sets.
var durationKeys = map[string]func(*Spec) *time.Duration{
	"period":         func(s *Spec) *time.Duration { return &s.Period },
	"ping_timeout":   func(s *Spec) *time.Duration { return &s.PingTimeout },
	"init_timeout":   func(s *Spec) *time.Duration { return &s.InitTimeout },
	"stop_grace":     func(s *Spec) *time.Duration { return &s.StopGrace },
	"backoff_base":   func(s *Spec) *time.Duration { return &s.BackoffBase },
	"backoff_cap":    func(s *Spec) *time.Duration { return &s.BackoffCap },
	"backoff_reset":  func(s *Spec) *time.Duration { return &s.BackoffReset },
	"restart_window": func(s *Spec) *time.Duration { return &s.RestartWindow },
	"cpu_time":       func(s *Spec) *time.Duration { return &s.CPUTime },
}

var otherKeys = []string{"binary", "args", "restart", "depends", "max_restarts", "standby", "memory", "open_files"}

// service parses [service.<label>]; it also returns the line of its
// depends key (0 if none), where dependency errors point.
func (c *configParser) service(label string, p toml.Primitive) (Spec, int, error) {
	line := c.lineOf(p)
	s := Spec{Label: label, Period: DefaultPeriod, File: c.file, Line: line}
	if err := CheckLabel(label); err != nil {
		return s, 0, c.errorf(line, "%w", err)
	}
	if _, ok := c.value(p).(map[string]any); !ok {
		return s, 0, c.errorf(line, "service %q: want a table, got %s", label, tomlKind(c.value(p)))
	}
	var fields map[string]toml.Primitive
	if err := c.md.PrimitiveDecode(p, &fields); err != nil {
		return s, 0, c.errorf(line, "service %q: %v", label, err)
	}

	// A key's line is looked up only for an error: each lookup costs the
	// TOML library a pass over the whole file.
	dependsLine := 0
	for _, key := range c.children("service", label) {
		fp := fields[key]
		v := c.value(fp)
		bad := func(format string, args ...any) error {
			return c.errorf(c.lineOf(fp), "service %q: %s", label, fmt.Sprintf(format, args...))
		}
		if field, ok := durationKeys[key]; ok {
			str, ok := v.(string)
			if !ok {
				return s, 0, bad(`%s: want a duration string such as "1s", got %s`, key, tomlKind(v))
			}
			d, err := time.ParseDuration(str)
			if err != nil {
				return s, 0, bad("%s %q: invalid duration", key, str)
			}
			if d < 0 {
				return s, 0, bad("%s %q: negative duration", key, str)
			}
			*field(&s) = d
			continue
		}
		switch key {
		case "binary":
			str, ok := v.(string)
			if !ok {
				return s, 0, bad("binary: want a string, got %s", tomlKind(v))
			}
			s.Binary = str
		case "args", "depends":
			list, ok := tomlStrings(v)
			if !ok {
				return s, 0, bad("%s: want an array of strings, got %s", key, tomlKind(v))
			}
			if key == "args" {
				s.Args = list
			} else {
				s.Depends = list
				dependsLine = c.lineOf(fp)
			}
		case "restart":
			str, ok := v.(string)
			if !ok {
				return s, 0, bad("restart: want a string, got %s", tomlKind(v))
			}
			r, err := ParseRestart(str)
			if err != nil {
				return s, 0, bad("%v", err)
			}
			s.Restart = r
		case "max_restarts":
			n, ok := v.(int64)
			if !ok {
				return s, 0, bad("max_restarts: want an integer, got %s", tomlKind(v))
			}
			if n == 0 {
				// Zero would read as "default" in a Spec; say what to write.
				return s, 0, bad("max_restarts 0: want a positive number, a negative one for unlimited, or restart = %q", RestartNever)
			}
			if n > math.MaxInt || n < -math.MaxInt {
				return s, 0, bad("max_restarts %d: out of range", n)
			}
			s.MaxRestarts = int(n)
		case "memory":
			var err error
			switch v := v.(type) {
			case string:
				s.Memory, err = ParseBytes(v)
			case int64:
				if v <= 0 {
					err = fmt.Errorf("memory %d: want a positive number of bytes", v)
				}
				s.Memory = uint64(v)
			default:
				err = fmt.Errorf(`memory: want a size such as "256MiB", got %s`, tomlKind(v))
			}
			if err != nil {
				return s, 0, bad("%v", err)
			}
		case "open_files":
			n, ok := v.(int64)
			if !ok || n <= 0 {
				return s, 0, bad("open_files: want a positive integer, got %v", v)
			}
			s.OpenFiles = uint64(n)
		case "standby":
			b, ok := v.(bool)
			if !ok {
				return s, 0, bad("standby: want true or false, got %s", tomlKind(v))
			}
			s.Standby = b
		default:
			msg := fmt.Sprintf("unknown key %q", key)
			if near := suggestKey(key); near != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", near)
			}
			return s, 0, bad("%s", msg)
		}
	}

	if s.Binary == "" {
		return s, 0, c.errorf(line, "service %q: missing binary", label)
	}
	if !filepath.IsAbs(s.Binary) {
		s.Binary = filepath.Join(c.dir, s.Binary)
	}
	if d := s.withDefaults(); d.BackoffBase > d.BackoffCap {
		key := "backoff_base"
		if _, ok := fields[key]; !ok {
			key = "backoff_cap"
		}
		at := c.lineOf(fields[key])
		return s, 0, c.errorf(at, "service %q: backoff_base %v exceeds backoff_cap %v", label, d.BackoffBase, d.BackoffCap)
	}
	return s, dependsLine, nil
}

// tomlStrings converts a TOML array of strings.
func tomlStrings(v any) ([]string, bool) {
	arr, ok := v.([]any)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(arr))
	for _, e := range arr {
		s, ok := e.(string)
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// tomlKind names a decoded TOML value's type for error messages.
func tomlKind(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("string %q", v)
	case int64:
		return fmt.Sprintf("integer %d", v)
	case float64:
		return fmt.Sprintf("float %v", v)
	case bool:
		return fmt.Sprintf("boolean %v", v)
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	case nil:
		return "nothing"
	}
	return fmt.Sprintf("%T", v)
}

// suggestKey returns the known key closest to a misspelt one, if close.
func suggestKey(key string) string {
	known := append([]string(nil), otherKeys...)
	for k := range durationKeys {
		known = append(known, k)
	}
	slices.Sort(known)   // ties go to the first, whatever the map order
	best, bestD := "", 3 // at most two edits away
	for _, k := range known {
		if d := editDistance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// StartOrder returns specs in an order where every service comes after
// the services it depends on; among services ready to start, the given
// order is kept. It fails on an invalid or duplicate label, a dependency
// on a label not in specs, or a dependency cycle. specs is not modified.
func StartOrder(specs []Spec) ([]Spec, error) {
	return startOrder(specs, func(s Spec) (string, int) { return s.File, s.Line })
}

// startOrder is StartOrder with where locating a Spec's dependency errors.
func startOrder(specs []Spec, where func(Spec) (string, int)) ([]Spec, error) {
	fail := func(s Spec, err error) error {
		file, line := where(s)
		return &ConfigError{File: file, Line: line, Err: err}
	}
	index := make(map[string]int, len(specs))
	for i, s := range specs {
		if err := CheckLabel(s.Label); err != nil {
			return nil, &ConfigError{File: s.File, Line: s.Line, Err: err}
		}
		if _, dup := index[s.Label]; dup {
			return nil, &ConfigError{File: s.File, Line: s.Line,
				Err: fmt.Errorf("service %q: %w", s.Label, ErrDuplicateLabel)}
		}
		index[s.Label] = i
	}
	for _, s := range specs {
		for _, d := range s.Depends {
			if _, ok := index[d]; !ok {
				return nil, fail(s, fmt.Errorf("service %q: %w %q", s.Label, ErrUnknownService, d))
			}
		}
	}

	placed := make([]bool, len(specs))
	ready := func(s Spec) bool {
		for _, d := range s.Depends {
			if !placed[index[d]] {
				return false
			}
		}
		return true
	}
	out := make([]Spec, 0, len(specs))
	for len(out) < len(specs) {
		next := -1
		for i, s := range specs {
			if !placed[i] && ready(s) {
				next = i
				break
			}
		}
		if next < 0 {
			cycle := findCycle(specs, index, placed)
			return nil, fail(specs[cycle[0]], fmt.Errorf("%w: %s", ErrDependencyCycle, cycleString(specs, cycle)))
		}
		placed[next] = true
		out = append(out, specs[next])
	}
	return out, nil
}

// findCycle returns the indices of a dependency cycle among the unplaced
// specs, starting at its member that comes first in specs. It is only
// called when no unplaced spec is ready, so every unplaced spec has an
// unplaced dependency and following them must come back somewhere.
func findCycle(specs []Spec, index map[string]int, placed []bool) []int {
	start := 0
	for placed[start] {
		start++
	}
	seenAt := map[int]int{} // spec index -> position in path
	var path []int
	for i := start; ; {
		if at, ok := seenAt[i]; ok {
			path = path[at:]
			break
		}
		seenAt[i] = len(path)
		path = append(path, i)
		for _, d := range specs[i].Depends {
			if j := index[d]; !placed[j] {
				i = j
				break
			}
		}
	}
	first := 0
	for k, i := range path {
		if i < path[first] {
			first = k
		}
	}
	return append(path[first:], path[:first]...)
}

func cycleString(specs []Spec, cycle []int) string {
	var b strings.Builder
	for _, i := range cycle {
		b.WriteString(specs[i].Label)
		b.WriteString(" -> ")
	}
	b.WriteString(specs[cycle[0]].Label)
	return b.String()
}
