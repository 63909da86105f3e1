package control

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// RuntimeDir is the directory of rs's private files (its default control
// socket, and later others): $XDG_RUNTIME_DIR/rs, else /run/rs for root,
// else $TMPDIR/rs-<uid> (/tmp/rs-<uid>). rs makes sure of it with
// PrivateDir before it puts anything there.
func RuntimeDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "rs")
	}
	if os.Getuid() == 0 {
		return "/run/rs"
	}
	return filepath.Join(os.TempDir(), "rs-"+strconv.Itoa(os.Getuid()))
}

// DefaultSocket is where rs listens, and service connects, when no
// --socket says: $RS_SOCKET, else rs.sock in RuntimeDir.
func DefaultSocket() string {
	if p := os.Getenv("RS_SOCKET"); p != "" {
		return p
	}
	return filepath.Join(RuntimeDir(), "rs.sock")
}

// PrivateDir makes sure dir is a directory of this process's uid, mode
// 0700, and not a symlink, creating it (mode 0700) if it does not exist.
// Anything else there (a file, a symlink, a directory of another uid or
// with another mode) is an error: whoever can write in a shared /tmp
// could have planted it, and rs changes neither its owner nor its mode.
// The checks are made on the directory opened without following a
// symlink, so what is checked is what is there.
func PrivateDir(dir string) error {
	created := true
	if err := unix.Mkdir(dir, 0o700); err != nil {
		if !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("runtime dir %s: %w", dir, err)
		}
		created = false
	}
	// O_PATH: a directory of another uid is looked at, not entered.
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		var lst unix.Stat_t
		switch {
		case unix.Lstat(dir, &lst) != nil:
		case lst.Mode&unix.S_IFMT == unix.S_IFLNK:
			return fmt.Errorf("runtime dir %s: is a symlink, not rs's own directory (remove it, or give --socket)", dir)
		case lst.Mode&unix.S_IFMT != unix.S_IFDIR:
			return fmt.Errorf("runtime dir %s: is not a directory (remove it, or give --socket)", dir)
		}
		return fmt.Errorf("runtime dir %s: %w", dir, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("runtime dir %s: %w", dir, err)
	}
	if uid := os.Getuid(); int(st.Uid) != uid {
		return fmt.Errorf("runtime dir %s: owned by uid %d, not by rs's uid %d (remove it, or give --socket)", dir, st.Uid, uid)
	}
	if created && st.Mode&0o7777 != 0o700 {
		// Ours, just made (a umask without the owner's bits): be exact.
		if err := unix.Fchmodat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), 0o700, 0); err != nil {
			return fmt.Errorf("runtime dir %s: %w", dir, err)
		}
		st.Mode = st.Mode&^0o7777 | 0o700
	}
	if mode := st.Mode & 0o7777; mode != 0o700 {
		return fmt.Errorf("runtime dir %s: mode %04o, want 0700 (chmod 700 it, or give --socket)", dir, mode)
	}
	return nil
}
