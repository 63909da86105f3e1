package main

import (
	"errors"
	"reflect"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the request parser, whole and split
// at an arbitrary point. Malformed input must give a protocolError, never
// a panic, and where the input ends must not change what it means.
func FuzzParse(f *testing.F) {
	// More seeds live in testdata/fuzz/FuzzParse.
	f.Add([]byte("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"), 5)
	f.Add([]byte("SET \"a\\x41\" 'b'\r\n"), 3)
	f.Add([]byte("*1\r\n$-1\r\n"), 1)
	f.Fuzz(func(t *testing.T, in []byte, split int) {
		whole, errWhole := parseAll(in, 0)
		var pe protocolError
		if errWhole != nil && !errors.As(errWhole, &pe) {
			t.Fatalf("error %v is not a protocolError", errWhole)
		}
		for _, r := range whole {
			if len(r) == 0 {
				t.Fatalf("empty request parsed from %q", in)
			}
		}
		if split <= 0 || len(in) == 0 {
			return
		}
		chunked, errChunked := parseAll(in, 1+split%len(in))
		if !reflect.DeepEqual(chunked, whole) || (errChunked == nil) != (errWhole == nil) {
			t.Fatalf("input %q: whole gives %q, %v; in chunks of %d gives %q, %v",
				in, whole, errWhole, 1+split%len(in), chunked, errChunked)
		}
	})
}
