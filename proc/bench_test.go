package proc

import (
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkStart is the cost of one spawn up to the child's reap: fork,
// exec, the exec stop where there are limits, and the cgroups where in
// force (process-group: as if rs had none).
func BenchmarkStart(b *testing.B) {
	limit := []Limit{{Resource: unix.RLIMIT_NOFILE, Value: 64}}
	for _, bc := range []struct {
		name   string
		limits []Limit
		memory uint64
		groups bool
	}{
		{"process-group", nil, 0, true},
		{"process-group+limits", limit, 0, true},
		{"cgroup", nil, 0, false},
		{"cgroup+limits", limit, 0, false},
		{"cgroup+limits+v1memory", limit, 64 << 20, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			Containment()
			saved := cg
			if bc.groups {
				cg.v2, cg.v1mem, cg.v1pids = "", "", ""
				cg.info = Info{Mode: ContainProcessGroup}
			}
			defer func() { cg = saved }()
			for b.Loop() {
				p, err := Start(Spec{Path: "/bin/true", Limits: bc.limits, Memory: bc.memory})
				if err != nil {
					b.Fatal(err)
				}
				<-p.Done()
			}
		})
	}
}
