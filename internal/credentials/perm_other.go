//go:build !unix

package credentials

import (
	"fmt"
	"os"
)

// CheckPrivate refuses a file with group or other permission bits; owners and mounts are
// checked on Unix only.
func CheckPrivate(f *os.File, path string) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("inspecting %s: %w", path, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %04o, so other users can read the secret: restrict it to your user", ErrInsecurePermissions, path, perm)
	}
	return nil
}

func checkDir(string, string) error { return nil }

func fileID(os.FileInfo) (dev, ino uint64) { return 0, 0 }
