package rs

import (
	"container/heap"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// The one path of a Spec: the config file (one control.Patch per
// service) and `service up` (a Patch on the wire) both make a Spec with
// Apply, and both check the table it would make with Validate.

// Errors a caller may want to tell apart (errors.Is).
var (
	ErrUnknownService  = errors.New("depends on unknown service")
	ErrDependencyCycle = errors.New("dependency cycle")
	ErrDuplicateLabel  = errors.New("defined twice")
	ErrBadLabel        = errors.New("invalid label")
)

// MaxLabelLen is the longest label rs accepts.
const MaxLabelLen = 64

// MinPeriod is the shortest ping period and ping timeout rs accepts.
const MinPeriod = control.MinPeriod

// CheckLabel reports whether label is a valid service label: a letter or
// digit, then letters, digits, '_', '.' or '-', at most MaxLabelLen bytes.
func CheckLabel(label string) error {
	if len(label) > MaxLabelLen {
		return fmt.Errorf("%w %q: longer than %d characters", ErrBadLabel, label, MaxLabelLen)
	}
	if !validLabel(label) {
		return fmt.Errorf("%w %q: want a letter or digit, then letters, digits, '_', '.' or '-'", ErrBadLabel, label)
	}
	return nil
}

// validLabel: [A-Za-z0-9][A-Za-z0-9_.-]*, without a regexp (a table of
// ten thousand is checked at every `service up`).
func validLabel(label string) bool {
	if label == "" {
		return false
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// SpecError is a setting of one service that cannot be. Keys name the
// settings at fault, most telling first (none: the service as a whole),
// so that the config file can point at a line.
type SpecError struct {
	Label string
	Keys  []string
	Err   error
}

func (e *SpecError) Error() string { return e.Err.Error() }
func (e *SpecError) Unwrap() error { return e.Err }

func specErrorf(label string, keys []string, format string, args ...any) *SpecError {
	return &SpecError{Label: label, Keys: keys, Err: fmt.Errorf("service %q: "+format, append([]any{label}, args...)...)}
}

// Apply returns s with the settings p gives. It refuses values that have
// no meaning with control.CheckValue, the check `service up` makes
// before it sends a Patch. A new period without a new ping
// timeout lets the timeout follow the period again.
func (s Spec) Apply(p *control.Patch) (Spec, error) {
	if p == nil {
		return s, nil
	}
	sv := reflect.ValueOf(&s).Elem()
	var err error
	p.Given(func(f control.Field, v any) {
		if err != nil {
			return
		}
		bad := func(format string, args ...any) { err = specErrorf(s.Label, []string{f.Key}, format, args...) }
		if e := control.CheckValue(f.Key, v); e != nil {
			bad("%v", e)
			return
		}
		if f.Key == "restart" {
			s.Restart, _ = ParseRestart(v.(string)) // checked
			return
		}
		if f.Key == "stop_signal" {
			s.StopSignal, _ = control.ParseSignal(v.(string)) // checked
			return
		}
		if f.Key == "failed_retry" && v.(time.Duration) == 0 {
			// Zero would mean "default" in a Spec; said explicitly it
			// means never.
			s.FailedRetry = FailedRetryNever
			return
		}
		sv.FieldByName(f.Name).Set(reflect.ValueOf(v))
	})
	if err != nil {
		return s, err
	}
	if p.Period != nil && p.PingTimeout == nil {
		s.PingTimeout = 0
	}
	if p.Type != nil && *p.Type == TypeNotify && p.Period == nil {
		// A notify service is watched only if it is asked to be (its
		// period: the watchdog), as under systemd: a daemon that never
		// sends WATCHDOG=1 would otherwise die of no-heartbeat.
		s.Period, s.PingTimeout = 0, 0
	}
	return s, nil
}

// durationFields are the Spec fields of every duration setting.
var durationFields = func() []struct {
	key   string
	index int
} {
	var out []struct {
		key   string
		index int
	}
	st := reflect.TypeFor[Spec]()
	for _, f := range control.Fields() {
		if f.Kind == control.KindDuration {
			sf, _ := st.FieldByName(f.Name)
			out = append(out, struct {
				key   string
				index int
			}{f.Key, sf.Index[0]})
		}
	}
	return out
}()

// validateSpec checks one service's settings on their own.
func validateSpec(s Spec) error {
	if err := CheckLabel(s.Label); err != nil {
		return &SpecError{Label: s.Label, Err: err}
	}
	if s.Binary == "" {
		return specErrorf(s.Label, nil, "missing binary")
	}
	if !filepath.IsAbs(s.Binary) {
		return specErrorf(s.Label, []string{"binary"}, "binary %q: path must be absolute", s.Binary)
	}
	// The values' own rules are control.CheckValue's, for the config
	// and `service up` alike.
	for _, kv := range []struct {
		key string
		v   any
	}{{"restart", string(s.Restart)}, {"type", s.Type}, {"reload_action", s.ReloadAction}, {"on_failure", s.OnFailure}, {"on_exit", s.OnExit}} {
		if err := control.CheckValue(kv.key, kv.v); err != nil {
			return specErrorf(s.Label, []string{kv.key}, "%v", err)
		}
	}
	sv := reflect.ValueOf(s)
	for _, f := range durationFields {
		d := time.Duration(sv.Field(f.index).Int())
		if f.key == "failed_retry" && d == FailedRetryNever {
			continue
		}
		if err := control.CheckValue(f.key, d); err != nil {
			return specErrorf(s.Label, []string{f.key}, "%v", err)
		}
	}
	if err := validateChecks(s); err != nil {
		return err
	}
	if d := s.withDefaults(); d.BackoffBase > d.BackoffCap {
		return specErrorf(s.Label, []string{"backoff_base", "backoff_cap"}, "backoff_base %v exceeds backoff_cap %v", d.BackoffBase, d.BackoffCap)
	}
	return validateLaunch(s)
}

// Validate checks the table specs would make: each service on its own,
// then labels that are unique, dependencies that exist and no cycle.
func Validate(specs []Spec) error {
	for _, s := range specs {
		if err := validateSpec(s); err != nil {
			return err
		}
	}
	_, err := order(specs)
	return err
}

// StartOrder returns specs in an order where every service comes after
// the services it depends on; among services ready to start, the given
// order is kept. It fails on an invalid or duplicate label, a dependency
// on a label not in specs, or a dependency cycle, with a *ConfigError
// that names the Spec's File and Line. specs is not modified.
func StartOrder(specs []Spec) ([]Spec, error) {
	idx, err := order(specs)
	var se *SpecError
	if errors.As(err, &se) {
		for _, s := range specs {
			if s.Label == se.Label {
				return nil, &ConfigError{File: s.File, Line: s.Line, Err: err}
			}
		}
	}
	if err != nil {
		return nil, err
	}
	return inOrder(specs, idx), nil
}

func inOrder(specs []Spec, idx []int) []Spec {
	out := make([]Spec, len(idx))
	for k, i := range idx {
		out[k] = specs[i]
	}
	return out
}

// order is StartOrder as indices into specs, with its errors as
// *SpecError.
func order(specs []Spec) ([]int, error) {
	index := make(map[string]int, len(specs))
	for i, s := range specs {
		if err := CheckLabel(s.Label); err != nil {
			return nil, &SpecError{Label: s.Label, Err: err}
		}
		if _, dup := index[s.Label]; dup {
			return nil, specErrorf(s.Label, nil, "%w", ErrDuplicateLabel)
		}
		index[s.Label] = i
	}
	for _, s := range specs {
		for _, d := range s.Depends {
			if _, ok := index[d]; !ok {
				return nil, specErrorf(s.Label, []string{"depends"}, "%w %q", ErrUnknownService, d)
			}
		}
	}

	// Kahn's sort, always taking the first ready spec in the given order
	// (a heap of indices): O((n+e) log n), so that checking a table of
	// ten thousand services for one `service up` costs milliseconds.
	waits := make([]int, len(specs))        // unplaced distinct dependencies
	dependents := make([][]int, len(specs)) // who waits for each
	for i, s := range specs {
		for k, d := range s.Depends {
			if !slices.Contains(s.Depends[:k], d) {
				j := index[d]
				waits[i]++
				dependents[j] = append(dependents[j], i)
			}
		}
	}
	ready := &indexHeap{}
	for i := range specs {
		if waits[i] == 0 {
			heap.Push(ready, i)
		}
	}
	placed := make([]bool, len(specs))
	out := make([]int, 0, len(specs))
	for ready.Len() > 0 {
		i := heap.Pop(ready).(int)
		placed[i] = true
		out = append(out, i)
		for _, j := range dependents[i] {
			if waits[j]--; waits[j] == 0 {
				heap.Push(ready, j)
			}
		}
	}
	if len(out) < len(specs) {
		cycle := findCycle(specs, index, placed)
		first := specs[cycle[0]]
		return nil, &SpecError{Label: first.Label, Keys: []string{"depends"},
			Err: fmt.Errorf("%w: %s", ErrDependencyCycle, cycleString(specs, cycle))}
	}
	return out, nil
}

// indexHeap is a min-heap of spec indices.
type indexHeap []int

func (h indexHeap) Len() int           { return len(h) }
func (h indexHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h indexHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *indexHeap) Push(x any)        { *h = append(*h, x.(int)) }
func (h *indexHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
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
