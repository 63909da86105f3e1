package tests

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/reincarnation/rs/internal/campaign"
)

// TestShortCampaign: a couple of hundred faults of every kind against
// three kv services under one rs (the long run is `make campaign`). Every
// fault must be recovered from, and at the end rs must have no zombie or
// stray child, must not have grown, and must exit on SIGTERM leaving
// nothing behind. The seed is random and logged; RS_CAMPAIGN_SEED=N
// replays a sequence of faults.
func TestShortCampaign(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	var seed uint64
	if s := os.Getenv("RS_CAMPAIGN_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("RS_CAMPAIGN_SEED: %v", err)
		}
		seed = n
	}
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (RS_CAMPAIGN_SEED=%d replays it)", seed, seed)
	rep, err := campaign.Run(campaign.Config{
		Bin:      binDir,
		Faults:   200,
		Services: 3,
		Seed:     seed,
		// With the default timeout (the 100ms period) a healthy kv that
		// the CPU starves for 100ms (other tests run in parallel) misses
		// a heartbeat, and rs rightly kills it: during an update that
		// must roll back, that reads as a failure here.
		PingTimeout: 500 * time.Millisecond,
		Dir:         t.TempDir(),
	})
	if rep != nil {
		t.Logf("report:\n%s", rep.Markdown())
	}
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Errorf("the campaign failed (seed %d):\n%s", seed, rep.Details())
	}
}
