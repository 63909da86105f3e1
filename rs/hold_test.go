package rs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reincarnation/rs/msg"
	"github.com/reincarnation/rs/rs/control"
)

// ignoreHold is a service that speaks the protocol by hand and ignores
// a held init's hold: its init-result does not confirm it (as a sef
// that read the init leniently and serves at once would). It answers
// pings and stops when asked.
func ignoreHold() int {
	c, err := msg.FromEnv()
	if err != nil || c == nil {
		return 1
	}
	c.Send(&msg.Message{Kind: msg.KindHello, Version: msg.ProtocolVersion})
	_, files, err := c.Recv()
	if err != nil {
		return 1
	}
	msg.CloseFiles(files)
	c.Send(&msg.Message{Kind: msg.KindInitResult})
	for {
		m, files, err := c.Recv()
		if err != nil {
			return 1
		}
		msg.CloseFiles(files)
		switch m.Kind {
		case msg.KindPing:
			c.Send(&msg.Message{Kind: msg.KindPong, Seq: m.Seq})
		case msg.KindStop:
			return 0
		}
	}
}

// TestGroupMemberThatDoesNotHold: b's new instance answers its held init
// without the hold: it would serve before the commit, so the group rolls
// back, saying why, and both old instances serve on.
func TestGroupMemberThatDoesNotHold(t *testing.T) {
	s, _ := newServer(t)
	flag := filepath.Join(t.TempDir(), "ignore")
	upSpec(t, s, selfSpec(t, "a", "plain"))
	upSpec(t, s, selfSpec(t, "b", "ignore-hold:"+flag))
	pids := map[string]int{}
	for _, l := range []string{"a", "b"} {
		pids[l] = waitStatus(t, s, l, func(st control.Status) bool { return st.State == control.StateRunning }).Pid
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := s.Do(control.Request{Op: control.OpUpdate, Label: "a", Group: []string{"b"}}, nil)
	if !strings.Contains(r.Err, "update a b rolled back: b: new instance does not hold until the group's commit") {
		t.Fatalf("group update with a member that does not hold: %+v", r)
	}
	for _, l := range []string{"a", "b"} {
		waitStatus(t, s, l, func(st control.Status) bool { return st.State == control.StateRunning && st.Pid == pids[l] })
	}
}
