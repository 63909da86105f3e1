package msg

import (
	"errors"
	"testing"
)

// The pre-copy messages: which fds and fields each may carry.
func TestPreCopyMessages(t *testing.T) {
	for name, tc := range map[string]struct {
		m    Message
		nfds int
		ok   bool
	}{
		"hello with precopy":       {Message{Kind: KindHello, Version: 1, PreCopy: true}, 0, true},
		"lu-base":                  {Message{Kind: KindLUBase, Names: []string{BaseFD}}, 1, true},
		"lu-base without its fd":   {Message{Kind: KindLUBase}, 0, false},
		"lu-base, another name":    {Message{Kind: KindLUBase, Names: []string{"x"}}, 1, false},
		"lu-prepare with the base": {Message{Kind: KindLUPrepare, State: 1, MaxTime: 1, Names: []string{BaseFD}}, 1, true},
		"lu-prepare, another fd":   {Message{Kind: KindLUPrepare, State: 1, MaxTime: 1, Names: []string{"x"}}, 1, false},
		"lu-prepare, two fds":      {Message{Kind: KindLUPrepare, State: 1, MaxTime: 1, Names: []string{BaseFD, BaseFD}}, 2, false},
		"lu-base-done":             {Message{Kind: KindLUBaseDone, Base: 1 << 40}, 0, true},
		"lu-base-done with an fd":  {Message{Kind: KindLUBaseDone, Names: []string{BaseFD}}, 1, false},
		"precopy outside hello":    {Message{Kind: KindInitResult, PreCopy: true}, 0, false},
	} {
		err := tc.m.Validate(tc.nfds)
		if (err == nil) != tc.ok {
			t.Errorf("%s: Validate = %v, want ok %v", name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrFDMismatch) {
			t.Errorf("%s: %v wraps no sentinel", name, err)
		}
		if !tc.ok {
			continue
		}
		b, err := Encode(&tc.m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := Decode(b, tc.nfds)
		if err != nil || got.Kind != tc.m.Kind || got.PreCopy != tc.m.PreCopy || got.Base != tc.m.Base {
			t.Errorf("%s: decoded %+v, %v", name, got, err)
		}
	}
	if !KindLUBaseDone.FromService() || KindLUBase.FromService() {
		t.Error("lu-base-done is the service's, lu-base rs's")
	}
}
