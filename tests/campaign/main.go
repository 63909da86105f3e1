// Command campaign runs the fault campaign (package internal/campaign)
// and prints its report as markdown.
//
//	go run ./tests/campaign [-faults 1000] [-services 4] [-seed N] [-bin DIR]
//	                        [-kinds k1,k2] [-net unix|tcp] [-sequential]
//	                        [-timeout 15s] [-ping-timeout D] [-out FILE] [-dir DIR] [-v]
//
// -bin names a directory holding the binaries the campaign needs (rs,
// kv-a, kv-b, kv-luexit, kv-luhang, kv-lurestore); if it lacks any, they
// are all built into a temp directory first. With -out the report and how
// to reproduce it replace the `<!-- campaign -->` section of FILE (created
// if needed). It exits 1 if a fault did not recover or a check failed.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/reincarnation/rs/internal/campaign"
)

func main() {
	faults := flag.Int("faults", campaign.DefaultFaults, "faults to inject")
	services := flag.Int("services", campaign.DefaultServices, "kv services under rs")
	seed := flag.Uint64("seed", 0, "PRNG seed (0: from the clock; the report shows it)")
	bin := flag.String("bin", "", "directory of built binaries (default, or if incomplete: build into a temp dir)")
	kinds := flag.String("kinds", "", "comma-separated fault kinds (default all: "+kindList()+")")
	netw := flag.String("net", campaign.DefaultNetwork, "kv listens on unix sockets or tcp (127.0.0.1)")
	seq := flag.Bool("sequential", false, "one fault at a time overall (default: services faulted concurrently)")
	timeout := flag.Duration("timeout", campaign.DefaultRecoverTimeout, "bound on each recovery")
	pingTimeout := flag.Duration("ping-timeout", 0, "the services' ping_timeout (default: rs's, the 100ms period)")
	out := flag.String("out", "", "replace the campaign section of this markdown file with the report")
	verbose := flag.Bool("v", false, "a line per fault on stderr")
	workDir := flag.String("dir", "", "work directory (config, sockets, rs.log), kept afterwards (default: a temp dir, removed unless something failed)")
	flag.Parse()
	if flag.NArg() > 0 {
		fail(2, fmt.Errorf("unexpected argument %q", flag.Arg(0)))
	}
	cfg := campaign.Config{Faults: *faults, Services: *services, Seed: *seed, Network: *netw,
		Sequential: *seq, RecoverTimeout: *timeout, PingTimeout: *pingTimeout, Progress: os.Stderr, Verbose: *verbose, Dir: *workDir}
	if *kinds != "" {
		for name := range strings.SplitSeq(*kinds, ",") {
			k, err := campaign.ParseKind(strings.TrimSpace(name))
			if err != nil {
				fail(2, fmt.Errorf("-kinds: %w (want some of %s)", err, kindList()))
			}
			cfg.Kinds = append(cfg.Kinds, k)
		}
	}
	dir, cleanup, err := binaries(*bin)
	if err != nil {
		fail(1, err)
	}
	defer cleanup()
	cfg.Bin = dir

	rep, err := campaign.Run(cfg)
	if rep == nil {
		cleanup()
		fail(1, err)
	}
	reproduce := fmt.Sprintf("go run ./tests/campaign -faults %d -services %d -seed %d", rep.Faults, rep.Services, rep.Seed)
	if *kinds != "" {
		reproduce += " -kinds " + *kinds
	}
	if *netw != campaign.DefaultNetwork {
		reproduce += " -net " + *netw
	}
	if *seq {
		reproduce += " -sequential"
	}
	if *pingTimeout > 0 {
		reproduce += " -ping-timeout " + pingTimeout.String()
	}
	md := rep.Markdown() + fmt.Sprintf("\nReproduce (the same faults in the same order; timing differs): `%s`. "+
		"Run on %s/%s, %d CPUs, %s, %s.\n", reproduce, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(),
		runtime.Version(), time.Now().UTC().Format("2006-01-02"))
	fmt.Print(md)
	if d := rep.Details(); d != "" {
		fmt.Fprint(os.Stderr, "\n"+d)
	}
	if *out != "" {
		if werr := campaign.ReplaceSection(*out, "## Fault campaign\n\n"+md); werr != nil {
			cleanup()
			fail(1, werr)
		}
		fmt.Fprintf(os.Stderr, "campaign: report written to %s\n", *out)
	}
	if err != nil || !rep.OK() {
		cleanup()
		if err == nil {
			err = errors.New("some faults did not recover or a check failed")
		}
		fail(1, err)
	}
}

// binaries returns a directory holding every binary the campaign needs,
// building them into a temp directory when dir is "" or incomplete.
func binaries(dir string) (string, func(), error) {
	if dir != "" {
		missing := campaign.Missing(dir)
		if len(missing) == 0 {
			return dir, func() {}, nil
		}
		fmt.Fprintf(os.Stderr, "campaign: %s lacks %s; building everything into a temp dir\n", dir, strings.Join(missing, ", "))
	}
	tmp, err := os.MkdirTemp("", "rs-campaign-bin-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(tmp) }
	fmt.Fprintf(os.Stderr, "campaign: building %s into %s\n", strings.Join(campaign.Binaries(), ", "), tmp)
	if err := campaign.Build(tmp, os.Stderr); err != nil {
		cleanup()
		return "", nil, err
	}
	return tmp, cleanup, nil
}

func kindList() string {
	names := make([]string, len(campaign.AllKinds))
	for i, k := range campaign.AllKinds {
		names[i] = string(k)
	}
	return strings.Join(names, ",")
}

func fail(code int, err error) {
	fmt.Fprintln(os.Stderr, "campaign:", err)
	os.Exit(code)
}
