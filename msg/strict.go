package msg

import (
	"bytes"
	"fmt"
	"math"

	"github.com/vmihailenco/msgpack/v5"
)

// CheckFit tells whether every integer in the msgpack value b survived
// its decoding into v unchanged. msgpack decodes an integer into a
// narrower field by truncating it (65537 into a uint16 reads as 1, -1
// into a uint64 as 2^64-1) and says nothing; an integer that does not fit
// its field is malformed instead. It compares b, read with every integer
// at full width, against v encoded again: a number in b must be the
// number v holds at the same place (a field v leaves out counts as 0), and
// a float where v holds an integer does not fit either. b must have
// passed Scan. The error wraps ErrMalformed and names the field.
func CheckFit(b []byte, v any) error {
	orig, err := decodeWide(b)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	re, err := msgpack.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	back, err := decodeWide(re)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if path, ok := fits("", orig, back); !ok {
		return fmt.Errorf("%w: %s: value does not fit its field", ErrMalformed, path)
	}
	return nil
}

func decodeWide(b []byte) (any, error) {
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	dec.UseLooseInterfaceDecoding(true) // int64, uint64, float64
	return dec.DecodeInterfaceLoose()
}

// fits compares a value as sent (orig) with the value as kept (back),
// for numbers only; it returns where they differ.
func fits(path string, orig, back any) (string, bool) {
	switch o := orig.(type) {
	case int64, uint64, float64:
		if back == nil {
			back = int64(0)
		}
		if !sameNumber(o, back) {
			return fmt.Sprintf("%s: %v", path, o), false
		}
	case map[string]any:
		bm, _ := back.(map[string]any)
		for k, ov := range o {
			if p, ok := fits(join(path, k), ov, bm[k]); !ok {
				return p, false
			}
		}
	case map[any]any:
		bm, _ := back.(map[any]any)
		for k, ov := range o {
			if p, ok := fits(join(path, fmt.Sprint(k)), ov, bm[k]); !ok {
				return p, false
			}
		}
	case []any:
		bs, _ := back.([]any)
		for i, ov := range o {
			var bv any
			if i < len(bs) {
				bv = bs[i]
			}
			if p, ok := fits(fmt.Sprintf("%s[%d]", path, i), ov, bv); !ok {
				return p, false
			}
		}
	}
	return path, true
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// sameNumber: a and b are the same integer, or the same float.
func sameNumber(a, b any) bool {
	switch a := a.(type) {
	case float64:
		bf, ok := b.(float64)
		return ok && (a == bf || math.IsNaN(a) && math.IsNaN(bf))
	case int64:
		switch b := b.(type) {
		case int64:
			return a == b
		case uint64:
			return a >= 0 && uint64(a) == b
		}
	case uint64:
		switch b := b.(type) {
		case uint64:
			return a == b
		case int64:
			return b >= 0 && uint64(b) == a
		}
	}
	return false
}
