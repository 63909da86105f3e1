package campaign

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// builds are the binaries a campaign needs and how to make each: rs, two
// versions of kv to update between, and three that fail their live-update
// init (the same builds as the end-to-end tests').
var builds = []struct {
	name, pkg, ldflags string
}{
	{"rs", "github.com/reincarnation/rs/cmd/rs", ""},
	{"kv-a", "github.com/reincarnation/rs/servers/kv", "-X main.version=a"},
	{"kv-b", "github.com/reincarnation/rs/servers/kv", "-X main.version=b"},
	{"kv-luexit", "github.com/reincarnation/rs/servers/kv", "-X main.luFault=exit"},
	{"kv-luhang", "github.com/reincarnation/rs/servers/kv", "-X main.luFault=hang"},
	{"kv-lurestore", "github.com/reincarnation/rs/servers/kv", "-X main.luFault=restore"},
}

// Binaries names the files Config.Bin must hold.
func Binaries() []string {
	names := make([]string, len(builds))
	for i, b := range builds {
		names[i] = b.name
	}
	return names
}

// Missing lists the binaries dir lacks.
func Missing(dir string) []string {
	var missing []string
	for _, name := range Binaries() {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			missing = append(missing, name)
		}
	}
	return missing
}

// Build builds every binary into dir with `go build`; it must run inside
// the module. The compiler's output goes to out.
func Build(dir string, out io.Writer) error {
	for _, b := range builds {
		args := []string{"build", "-o", filepath.Join(dir, b.name)}
		if b.ldflags != "" {
			args = append(args, "-ldflags", b.ldflags)
		}
		cmd := exec.Command("go", append(args, b.pkg)...)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build %s: %w", b.name, err)
		}
	}
	return nil
}
