package proc

import (
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkStart is the cost of one spawn with a limit set, up to the
// child's reap: fork, exec, limits, and (where in force) its cgroups.
func BenchmarkStart(b *testing.B) {
	for b.Loop() {
		p, err := Start(Spec{Path: "/bin/true", Limits: []Limit{{Resource: unix.RLIMIT_NOFILE, Value: 64}}})
		if err != nil {
			b.Fatal(err)
		}
		<-p.Done()
	}
}
