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
		if _, err := Encode(&m); err != nil {
			t.Fatalf("accepted %+v but cannot encode it: %v", m, err)
		}
	})
}
