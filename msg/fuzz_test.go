package msg

import (
	"reflect"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func marshalAny(v any) ([]byte, error) { return msgpack.Marshal(v) }

// FuzzDecode: whatever arrives on a channel, Decode returns a valid
// message or an error, never panics, and what it accepts re-encodes.
func FuzzDecode(f *testing.F) {
	for _, m := range []Message{
		{Kind: KindInit, Version: 1, InitType: InitFresh, Label: "kv"},
		{Kind: KindInitResult, Err: "x"},
		{Kind: KindPong, Seq: 1},
		{Kind: KindLUReady, Names: []string{"state", "listener"}},
		{Kind: KindFDStore, Names: []string{"listener"}},
	} {
		b, err := msgpack.Marshal(&m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, len(m.Names))
	}
	f.Add(appendHeartbeat(nil, KindPing, 1<<40), 0)
	// Integers wider than their fields: malformed, never cut to fit.
	for _, v := range []map[string]any{
		{"k": KindHello, "v": 65537},
		{"k": 260, "q": 1},
		{"k": KindInitResult, "n": []string{}},
		{"k": KindLUPrepare, "s": uint64(1<<32 + 1), "m": 1},
	} {
		b, err := marshalAny(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, 0)
	}
	f.Fuzz(func(t *testing.T, b []byte, nfds int) {
		if hb, ok := decodeHeartbeat(b); ok {
			// The shortcut reads nothing the general decoder reads otherwise.
			m, err := decodeGeneral(b, 0)
			if err != nil || !reflect.DeepEqual(m, hb) {
				t.Fatalf("heartbeat shortcut read %+v, general decoder %+v, %v", hb, m, err)
			}
		}
		m, err := Decode(b, nfds)
		if err != nil {
			return
		}
		re, err := Encode(&m)
		if err != nil {
			t.Fatalf("accepted %+v but cannot encode it: %v", m, err)
		}
		// Nothing accepted was cut to fit: it reads back the same.
		if len(m.Names) == 0 {
			m.Names = nil // an empty list is not encoded
		}
		if back, err := Decode(re, len(m.Names)); err != nil || !reflect.DeepEqual(back, m) {
			t.Fatalf("accepted %+v, which reads back as %+v, %v", m, back, err)
		}
	})
}
