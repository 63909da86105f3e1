package rs

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/BurntSushi/toml"

	"github.com/reincarnation/rs/rs/control"
)

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
	p := &configParser{file: path, dir: dir, md: &md, headers: serviceHeaders(data)}
	return p.parse(top)
}

// configParser walks a decoded file in file order, so that the first
// error reported is the first one in the file.
type configParser struct {
	file string
	dir  string // absolute directory of file
	md   *toml.MetaData
	kids map[string][]string // names under each key path (joined by NUL), in file order
	// tables: each [service.<label>] read so far, to point errors at lines.
	tables map[string]serviceTable
	// headers: the lines of the plain [service.<label>] headers.
	headers map[string]int
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

	c.tables = map[string]serviceTable{}
	var specs []Spec
	for _, label := range c.children("service") {
		s, err := c.service(label, services[label])
		if err == nil {
			err = validateSpec(s)
		}
		if err != nil {
			return nil, c.locate(err)
		}
		specs = append(specs, s)
	}
	idx, err := order(specs)
	if err != nil {
		return nil, c.locate(err)
	}
	return inOrder(specs, idx), nil
}

// serviceTable is one [service.<label>] as decoded: the table and its keys.
type serviceTable struct {
	p    toml.Primitive
	keys map[string]toml.Primitive
}

// locate turns a *SpecError into a *ConfigError at the line of the first
// of its keys that the service's table has, else of the table itself.
func (c *configParser) locate(err error) error {
	var se *SpecError
	if !errors.As(err, &se) {
		return err
	}
	t, ok := c.tables[se.Label]
	if !ok {
		return &ConfigError{File: c.file, Err: err}
	}
	for _, k := range se.Keys {
		if p, ok := t.keys[k]; ok {
			return &ConfigError{File: c.file, Line: c.lineOf(p), Err: err}
		}
	}
	return &ConfigError{File: c.file, Line: c.serviceLine(se.Label, t.p), Err: err}
}

// serviceLine is the line of [service.<label>]: from the one-pass scan of
// plain headers, else from the TOML library's probe.
func (c *configParser) serviceLine(label string, p toml.Primitive) int {
	if line, ok := c.headers[label]; ok {
		return line
	}
	return c.lineOf(p)
}

// serviceHeaders finds the line of each plain [service.<label>] header
// (bare or quoted label) in one pass over the text, so that a file of
// ten thousand services is not probed ten thousand times (each probe
// costs the TOML library a split of the whole file). A label seen twice,
// or written another way (dotted keys, an inline table), is left to the
// probe.
func serviceHeaders(data []byte) map[string]int {
	out := map[string]int{}
	seen := map[string]bool{}
	for i, raw := range strings.Split(string(data), "\n") {
		l := strings.TrimSpace(raw)
		if !strings.HasPrefix(l, "[") || strings.HasPrefix(l, "[[") {
			continue
		}
		l = strings.TrimSpace(l[1:])
		rest, ok := strings.CutPrefix(l, "service")
		if !ok {
			continue
		}
		rest = strings.TrimSpace(rest)
		if rest, ok = strings.CutPrefix(rest, "."); !ok {
			continue
		}
		rest = strings.TrimSpace(rest)
		var label string
		switch {
		case strings.HasPrefix(rest, `"`) || strings.HasPrefix(rest, "'"):
			q := rest[:1]
			end := strings.Index(rest[1:], q)
			if end < 0 || strings.Contains(rest[1:1+end], `\`) {
				continue
			}
			label, rest = rest[1:1+end], rest[2+end:]
		default:
			end := strings.IndexAny(rest, " \t]")
			if end < 0 {
				continue
			}
			label, rest = rest[:end], rest[end:]
		}
		rest = strings.TrimSpace(rest)
		if !strings.HasPrefix(rest, "]") {
			continue
		}
		if after := strings.TrimSpace(rest[1:]); after != "" && !strings.HasPrefix(after, "#") {
			continue
		}
		if seen[label] {
			delete(out, label)
			continue
		}
		seen[label] = true
		out[label] = i + 1
	}
	return out
}

// service reads [service.<label>] into a Patch and applies it to the
// defaults of a configured service.
func (c *configParser) service(label string, p toml.Primitive) (Spec, error) {
	line := c.serviceLine(label, p)
	s := Spec{Label: label, Period: DefaultPeriod, File: c.file, Line: line}
	if err := CheckLabel(label); err != nil {
		return s, c.errorf(line, "%w", err)
	}
	if _, ok := c.value(p).(map[string]any); !ok {
		return s, c.errorf(line, "service %q: want a table, got %s", label, tomlKind(c.value(p)))
	}
	var keys map[string]toml.Primitive
	if err := c.md.PrimitiveDecode(p, &keys); err != nil {
		return s, c.errorf(line, "service %q: %v", label, err)
	}
	c.tables[label] = serviceTable{p: p, keys: keys}

	// A key's line is looked up only for an error: each lookup costs the
	// TOML library a pass over the whole file.
	var patch control.Patch
	for _, key := range c.children("service", label) {
		fp := keys[key]
		bad := func(format string, args ...any) error {
			return c.errorf(c.lineOf(fp), "service %q: %s", label, fmt.Sprintf(format, args...))
		}
		f, ok := control.FieldOf(key)
		if !ok {
			msg := fmt.Sprintf("unknown key %q", key)
			if near := suggestKey(key); near != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", near)
			}
			return s, bad("%s", msg)
		}
		v, err := tomlValue(f, c.value(fp))
		if err == nil {
			err = patch.Set(key, v)
		}
		if err != nil {
			return s, bad("%v", err)
		}
	}
	s, err := s.Apply(&patch)
	if err != nil {
		return s, err
	}
	for _, p := range []*string{&s.Binary, &s.Workdir, &s.EnvFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(c.dir, *p)
		}
	}
	return s, nil
}

// tomlValue converts a decoded TOML value to the Go value of f's kind.
func tomlValue(f control.Field, v any) (any, error) {
	key := f.Key
	switch f.Kind {
	case control.KindString:
		if s, ok := v.(string); ok {
			return s, nil
		}
		return nil, fmt.Errorf("%s: want a string, got %s", key, tomlKind(v))
	case control.KindStrings:
		if list, ok := tomlStrings(v); ok {
			return list, nil
		}
		return nil, fmt.Errorf("%s: want an array of strings, got %s", key, tomlKind(v))
	case control.KindDuration:
		str, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf(`%s: want a duration string such as "1s", got %s`, key, tomlKind(v))
		}
		d, err := time.ParseDuration(str)
		if err != nil {
			return nil, fmt.Errorf("%s %q: invalid duration", key, str)
		}
		return d, nil
	case control.KindBool:
		if b, ok := v.(bool); ok {
			return b, nil
		}
		return nil, fmt.Errorf("%s: want true or false, got %s", key, tomlKind(v))
	case control.KindInt:
		n, ok := v.(int64)
		if !ok {
			return nil, fmt.Errorf("%s: want an integer, got %s", key, tomlKind(v))
		}
		if n > math.MaxInt || n < -math.MaxInt {
			return nil, fmt.Errorf("%s %d: out of range", key, n)
		}
		return int(n), nil
	case control.KindUint:
		if n, ok := v.(int64); ok && n >= 0 {
			return uint64(n), nil
		}
		return nil, fmt.Errorf("%s: want a positive integer, got %v", key, v)
	case control.KindBytes:
		switch v := v.(type) {
		case string:
			return control.ParseBytes(v)
		case int64:
			if v < 0 {
				return nil, fmt.Errorf("%s %d: want a positive number of bytes", key, v)
			}
			return uint64(v), nil
		}
		return nil, fmt.Errorf(`%s: want a size such as "256MiB", got %s`, key, tomlKind(v))
	case control.KindEnv:
		t, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf(`%s: want a table such as { KEY = "value" }, got %s`, key, tomlKind(v))
		}
		m := make(map[string]string, len(t))
		for k, e := range t {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%s.%s: want a string, got %s", key, k, tomlKind(e))
			}
			m[k] = s
		}
		return m, nil
	}
	return nil, fmt.Errorf("%s: no conversion for it", key)
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
	var known []string
	for _, f := range control.Fields() {
		known = append(known, f.Key)
	}
	slices.Sort(known)   // ties go to the first
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
