//go:build unix

package credentials

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// CheckPrivate checks that the open file f, named path, keeps its secret from other users:
//
//   - a file on a read-only mount and owned by root is accepted whatever its mode: that is a
//     Kubernetes secret volume (mode 0644 by default, reached through symlinks), which nobody
//     but the kubelet can change and which the pod's own securityContext protects;
//   - otherwise the file must be owned by this user (or root), have no group or other
//     permission bits (0600 or narrower), and sit in a directory owned by this user (or root)
//     that no group or other user may write to (unless sticky), so no one can read it or swap
//     it for their own.
//
// Errors wrap ErrInsecurePermissions and name the fix.
func CheckPrivate(f *os.File, path string) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("inspecting %s: %w", path, err)
	}
	readOnly, err := readOnlyFS(int(f.Fd()))
	if err != nil {
		return fmt.Errorf("inspecting the file system of %s: %w", path, err)
	}
	if readOnly && st.Uid == 0 {
		return nil
	}
	euid := uint32(os.Geteuid())
	if st.Uid != euid && st.Uid != 0 {
		return fmt.Errorf("%w: %s is owned by uid %d, not by this user (uid %d) or root, so another user controls the secret: run chown %d %s",
			ErrInsecurePermissions, path, st.Uid, euid, euid, path)
	}
	if perm := st.Mode & 0o777; perm&0o077 != 0 {
		why := "the file system is writable"
		if readOnly {
			why = fmt.Sprintf("it is on a read-only mount but owned by uid %d, not root", st.Uid)
		}
		return fmt.Errorf("%w: %s has mode %04o, so other users can read the secret (a wider mode is accepted only on a read-only mount owned by root, as a Kubernetes secret volume; here %s): run chmod 600 %s",
			ErrInsecurePermissions, path, perm, why, path)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("resolving %s: %w", path, err)
	}
	return checkDir(filepath.Dir(real), path)
}

// checkDir checks that dir, holding the secret file path, is owned by this user or root and
// writable by no one else (a sticky directory such as /tmp excepted: others cannot replace a
// file they do not own there).
func checkDir(dir, path string) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("inspecting the directory of %s: %w", path, err)
	}
	euid := uint32(os.Geteuid())
	if st.Uid != euid && st.Uid != 0 {
		return fmt.Errorf("%w: the directory %s holding %s is owned by uid %d, not by this user (uid %d) or root, so its owner could replace the secret: move the file to a directory you own, or run chown %d %s",
			ErrInsecurePermissions, dir, path, st.Uid, euid, euid, dir)
	}
	if st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0 {
		return fmt.Errorf("%w: the directory %s holding %s has mode %04o, so other users could replace the secret: run chmod go-w %s (cdc-relay creates it 0700)",
			ErrInsecurePermissions, dir, path, st.Mode&0o777, dir)
	}
	return nil
}

// fileID returns the device and inode of fi, for Source's change check.
func fileID(fi os.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino)
	}
	return 0, 0
}
