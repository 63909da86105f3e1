package rs

import (
	"testing"

	"github.com/reincarnation/rs/rs/control"
)

// inInstance: a peer is a service's when it is in the group its instance
// leads, or in the instance's own cgroup or below it; rs's own callers
// (no pid) and spawning instances (pid 0) match nothing.
func TestInInstance(t *testing.T) {
	svc := control.Peer{Pid: 120, Uid: 0, Pgid: 100, Cgroup: "/rs.slice/kv-1"}
	cases := []struct {
		name   string
		peer   control.Peer
		pgid   int
		cgroup string
		want   bool
	}{
		{"its group", svc, 100, "", true},
		{"another group", svc, 101, "", false},
		{"spawning instance", control.Peer{Pid: 5, Pgid: 0}, 0, "", false},
		{"rs's own caller", control.Peer{}, 0, "", false},
		{"its cgroup, after setsid", control.Peer{Pid: 130, Pgid: 130, Cgroup: "/rs.slice/kv-1"}, 100, "/rs.slice/kv-1", true},
		{"below its cgroup", control.Peer{Pid: 130, Pgid: 130, Cgroup: "/rs.slice/kv-1/child"}, 100, "/rs.slice/kv-1", true},
		{"a cgroup of a like name", control.Peer{Pid: 130, Pgid: 130, Cgroup: "/rs.slice/kv-10"}, 100, "/rs.slice/kv-1", false},
		{"no cgroup of its own", control.Peer{Pid: 130, Pgid: 130, Cgroup: "/"}, 100, "", false},
	}
	for _, c := range cases {
		if got := inInstance(c.peer, c.pgid, c.cgroup); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
